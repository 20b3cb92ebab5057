"""``portrait`` commands that run something: the local stack, a worker, the profiles
publisher, the API, the demo, the fault suite and the benchmarks."""

from __future__ import annotations

import argparse
import os
import sys

from cli.common import print_json
from portrait.config import Settings

# --- stack ------------------------------------------------------------------------------


def cmd_stack(settings: Settings, args: argparse.Namespace) -> int:
    from cli.stack import LocalStack, StackError

    stack = LocalStack(settings)
    if args.action == "up":
        try:
            started = stack.up()
        except StackError as exc:
            print(f"stack: {exc}", file=sys.stderr)
            return 1
        for row in stack.status():
            mine = "started by portrait" if row["started_by_portrait"] else "already running"
            print(f"{row['service']:6} 127.0.0.1:{row['port']}  up ({mine})")
        print(f"recorded {len(started)} process(es) in {stack.state_file}")
        return 0
    if args.action == "down":
        stopped = stack.down()
        for item in stopped:
            print(f"stopped {item.service} (pid {item.pid}, port {item.port})")
        if not stopped:
            print("nothing to stop: this stack started no process that is still running")
        return 0
    rows = stack.status()
    if args.json:
        print_json(rows)
    else:
        for row in rows:
            state = "up" if row["answers"] else "down"
            owner = f"pid {row['pid']}" if row["pid"] else "not started by portrait"
            print(f"{row['service']:6} 127.0.0.1:{row['port']}  {state}  ({owner})")
    return 0 if all(row["answers"] for row in rows) else 1


# --- worker -----------------------------------------------------------------------------


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from api.routes import mount
    from cli.workers import run_workers
    from streams.worker import run_worker

    if args.lane is not None:
        settings = settings.model_copy(update={"lane": args.lane})
        os.environ["PORTRAIT_LANE"] = args.lane  # and to the processes it starts
    if args.processes > 1:
        return run_workers(settings, args.processes)
    # the aiohttp application of the Faust web server that serves /metrics
    run_worker(settings, web=lambda app: mount(app.web.web_app, settings))  # type: ignore[attr-defined]
    return 0


def cmd_publish_profiles(settings: Settings, _args: argparse.Namespace) -> int:
    from streams.profiles import run_publisher

    run_publisher(settings)
    return 0


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from api.serve import serve

    serve(settings, args.port)
    return 0


# --- demo and bench -------------------------------------------------------------------------


def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from cli.demo import run_demo

    return run_demo(settings, keep_stack=args.keep_stack)


def cmd_chaos(settings: Settings, args: argparse.Namespace) -> int:
    from cli.chaos import FAULTS, OUTSIDE_CLUSTER_CONTRACT, default_faults, run_chaos

    faults = default_faults(settings, args.short)
    if args.faults and not args.short:
        faults = tuple(args.faults.split(","))
    elif settings.redis_cluster:
        left = ", ".join(sorted(OUTSIDE_CLUSTER_CONTRACT))
        print(f"chaos: on a Redis Cluster {left} runs only when named (--faults; README)")
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        print(f"chaos: unknown faults {', '.join(unknown)}; known: {', '.join(FAULTS)}")
        return 2
    report = run_chaos(
        settings, args.seed, args.people, args.events_per_person, faults, workdir=args.workdir
    )
    return 0 if not report.problems else 1


def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    if args.api:
        from cli.bench.api import run_api_bench

        return run_api_bench(
            settings,
            customers=args.customers if args.customers is not None else 2_000,
            rate=args.rate or 500,
            seconds=args.seconds or 10.0,
            as_json=args.json,
        )
    if args.cluster:
        from cli.bench.cluster import run_cluster_bench

        return run_cluster_bench(
            settings, args.events, args.customers or 2_000, args.json, rounds=args.rounds
        )
    if args.durability:
        from cli.bench.durability import run_durability_bench

        customers = args.customers or 2_000
        return run_durability_bench(settings, args.events, customers, as_json=args.json)
    if args.growth:
        from cli.bench.growth import run_growth_bench

        run_growth_bench(
            settings,
            chats=args.chats,
            channel=args.channel_events,
            history=args.history,
            as_json=args.json,
            rounds=args.rounds,
        )
        return 0
    if args.replay:
        from cli.bench.replay import run_replay_bench

        return run_replay_bench(
            settings, events=args.events, customers=args.customers or 10_000, as_json=args.json
        )
    if args.prompts:
        from cli.bench.latency import run_latency_bench

        return run_latency_bench(
            settings,
            rate=args.rate or 200,
            seconds=args.seconds or 20.0,
            as_json=args.json,
            backlog=args.backlog,
        )
    if args.recovery or args.loss:
        return _bench_faults(settings, args)
    if args.emotion:
        from cli.bench.emotion import run_emotion_bench

        return run_emotion_bench(settings, messages=args.messages, as_json=args.json)
    from cli.bench import run_bench

    customers = args.customers or 10_000
    return run_bench(settings, events=args.events, customers=customers, as_json=args.json)


def _bench_faults(settings: Settings, args: argparse.Namespace) -> int:
    """``bench --recovery`` and ``bench --loss``: workers killed, outputs counted."""
    from cli.bench.loss import loss_workdir, run_loss
    from cli.bench.recovery import run_recovery_bench

    if args.recovery:
        rate = args.rate or 100
        return run_recovery_bench(settings, args.kills, args.every, rate, args.json, loss_workdir())
    customers = args.customers or 10_000
    return run_loss(settings, args.loss, args.events, customers, loss_workdir())
