"""``portrait``: the command line for operators and data teams."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from portrait.config import Settings, load_settings, yield_cpu
from portrait.errors import ServiceUnreachable, without_password
from processors.document import document_settings

IDENTIFIER_FLAGS = {
    "customer_id": "--customer-id",
    "phone": "--phone",
    "account_no": "--account-no",
    "im_id": "--im-id",
    "email": "--email",
}


def _print_json(value: Any, pretty: bool = True) -> None:
    option = orjson.OPT_INDENT_2 if pretty else 0
    sys.stdout.write(orjson.dumps(value, option=option).decode("utf-8") + "\n")
    sys.stdout.flush()


def _one_identifier(args: argparse.Namespace, command: str) -> tuple[str, str] | None:
    """The one identifier flag given (kind, value), or None after saying what is wrong."""
    chosen = [(kind, getattr(args, kind)) for kind in IDENTIFIER_FLAGS if getattr(args, kind)]
    if len(chosen) != 1:
        print(
            f"{command}: give exactly one of " + ", ".join(IDENTIFIER_FLAGS.values()),
            file=sys.stderr,
        )
        return None
    return chosen[0]


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
        _print_json(rows)
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


# --- produce ----------------------------------------------------------------------------


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from streams.kafka import ensure_topics, make_producer, produce_confirmed
    from streams.produce import Unroutable, jsonl_lines, route

    ensure_topics(settings)
    records, skipped = [], 0
    with Path(args.file).open("rb") as handle:
        for number, line in enumerate(jsonl_lines(handle), start=1):
            try:
                records.append(route(settings, line, args.topic))
            except Unroutable as exc:
                skipped += 1
                print(
                    f"line {number}: skipped ({exc}; use --topic to send it raw)", file=sys.stderr
                )
    producer = make_producer(settings)
    produce_confirmed(producer, records)
    print(f"produced {len(records)} event(s), skipped {skipped}")
    return 0 if skipped == 0 else 1


# --- problems ---------------------------------------------------------------------------


def cmd_problems(settings: Settings, args: argparse.Namespace) -> int:
    from models.encoder import load_encoder
    from processors.document import sections_of
    from processors.problems import all_problems, most_similar
    from state.lookup import find_customer
    from state.stores import store_for

    chosen = _one_identifier(args, "problems")
    if chosen is None:
        return 2
    kind, value = chosen

    async def lookup() -> list[dict[str, Any]] | None:
        store = store_for(settings)
        try:
            customer_id = await find_customer(store, kind, value)
            state = await store.load(customer_id) if customer_id else None
        finally:
            await store.close()
        return None if state is None else all_problems(sections_of(state["fields"])["r"])

    problems = asyncio.run(lookup())
    if problems is None:
        print(f"no customer with {IDENTIFIER_FLAGS[kind]} {value}", file=sys.stderr)
        return 1
    if args.like:
        problems = most_similar(problems, args.like, load_encoder(settings.embedding_model), 3)
    if args.json:
        _print_json(problems)
        return 0
    for problem in problems:
        resolution = problem["resolution"]
        outcome = (
            f"{resolution['type']} {resolution['outcome'] or ''} {resolution['at']}".strip()
            if resolution
            else "unresolved"
        )
        similarity = f"  similarity {problem['similarity']}" if "similarity" in problem else ""
        print(f"{problem['at']}  {problem['intent']:10}  {outcome}{similarity}")
        print(f"    {problem['text']}")
    return 0


# --- trends -----------------------------------------------------------------------------


def _seconds(text: str) -> int:
    """``90``, ``30m``, ``1h``, ``7d``, ``1h30m`` → seconds (a bare number is seconds)."""
    from pytimeparse.timeparse import timeparse as parse

    text = text.strip()
    seconds = int(text) if text.isdigit() else parse(text)
    if seconds is None:
        raise SystemExit(f"portrait: not a duration: {text!r} (e.g. 90, 30m, 1h, 7d)")
    return int(seconds)


def cmd_trends(settings: Settings, args: argparse.Namespace) -> int:
    from state.store import redis_client
    from streams.trends import recent_windows

    bucket = _seconds(args.window) if args.window else settings.trends_window_seconds
    if bucket < settings.trends_window_seconds or bucket % settings.trends_window_seconds:
        print(
            f"--window must be a multiple of PORTRAIT_TRENDS_WINDOW_SECONDS "
            f"({settings.trends_window_seconds} s)",
            file=sys.stderr,
        )
        return 2

    async def read() -> list[dict[str, Any]]:
        client = redis_client(settings)
        try:
            return await recent_windows(client, settings, bucket, args.last)
        finally:
            await client.aclose()

    windows = asyncio.run(read())
    if args.json:
        _print_json(windows)
        return 0
    for window in windows:
        terms = ", ".join(f"{t['term']} {t['count']}" for t in window["terms"][:10])
        intents = ", ".join(f"{name} {n}" for name, n in window["intents"].items())
        print(f"{window['window_start']} … {window['window_end']}  {window['messages']} messages")
        print(f"    terms:   {terms or '-'}")
        print(f"    intents: {intents or '-'}")
    return 0


# --- profile ----------------------------------------------------------------------------


def cmd_account(settings: Settings, args: argparse.Namespace) -> int:
    from state.lookup import get_account
    from state.stores import store_for

    async def lookup() -> dict[str, Any] | None:
        store = store_for(settings)
        try:
            return await get_account(store, args.account_no, document_settings(settings))
        finally:
            await store.close()

    account = asyncio.run(lookup())
    if account is None:
        print(f"no account {args.account_no}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(account)
        return 0
    print(f"account {account['account_no']}  version {account['version']}")
    for person in account["people"]:
        print(f"  {person['customer_id']}  {person['role'] or '-'}")
    stats = account["stats"]
    print(
        f"  events {stats['events_total']}  first {stats['first_seen']}  last {stats['last_seen']}"
    )
    for name, value in account["indicators"].items():
        print(f"  {name}: {value}")
    return 0


def cmd_profile(settings: Settings, args: argparse.Namespace) -> int:
    from state.lookup import SeveralPeople, get_profile
    from state.registry import ModelRegistry, customer_model_in_use
    from state.stores import store_for

    chosen = _one_identifier(args, "profile get")
    if chosen is None:
        return 2
    kind, value = chosen

    async def lookup() -> dict[str, Any] | None:
        store = store_for(settings)
        try:
            registry = ModelRegistry(store.redis, settings.redis_key_prefix)
            model = await customer_model_in_use(registry, settings.customer_model_version)
            return await get_profile(store, kind, value, model, document_settings(settings))
        finally:
            await store.close()

    try:
        profile = asyncio.run(lookup())
    except SeveralPeople as several:
        print(
            f"{several.count} people hold account {value}: use portrait account get",
            file=sys.stderr,
        )
        return 2
    if profile is None:
        print(f"no customer with {IDENTIFIER_FLAGS[kind]} {value}", file=sys.stderr)
        return 1
    if args.json:
        _print_json(profile)
    else:
        from cli.render import render_profile

        print(render_profile(profile))
    return 0


# --- import -----------------------------------------------------------------------------


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from streams.imports import build_imports, parse_mapping
    from streams.kafka import ensure_topics, make_producer, produce_confirmed
    from streams.produce import route

    path = Path(args.file)
    fmt = args.format or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    try:
        mapping = parse_mapping(args.map or [])
    except ValueError as exc:
        print(f"import: {exc}", file=sys.stderr)
        return 2
    key = settings.customer_id_hash_key()
    data = path.read_bytes()
    lines, summary = build_imports(data, fmt, args.source, mapping, args.confidence, key)
    yield_cpu(settings)  # a backfill: the live workers on this host go first
    ensure_topics(settings)
    producer = make_producer(settings)
    step = 1000
    with tqdm(total=len(lines), unit="rows", file=sys.stderr, disable=not lines) as bar:
        for start in range(0, len(lines), step):
            chunk = lines[start : start + step]
            produce_confirmed(producer, [route(settings, line) for line in chunk])
            bar.update(len(chunk))
    for reason in summary.reasons[:20]:
        print(reason, file=sys.stderr)
    print(f"accepted {summary.accepted}, rejected {summary.rejected}")
    return 0 if summary.rejected == 0 else 1


# --- products ---------------------------------------------------------------------------


def cmd_products(settings: Settings, args: argparse.Namespace) -> int:
    from processors.assist import PHASES, parse_stats
    from state.stores import store_for

    async def read() -> dict[str, str]:
        store = store_for(settings)
        try:
            return await store.product_stats()
        finally:
            await store.close()

    stats = parse_stats(asyncio.run(read()))
    rows = [
        {
            "phase": phase,
            "product": product,
            "offers": s.offers,
            "accepted": s.accepted,
            "rate": round(s.rate, 4),
        }
        for phase in PHASES
        if args.phase in (None, phase)
        for product, s in sorted(stats.get(phase, {}).items())
    ]
    if args.json:
        _print_json(rows)
        return 0
    print(f"{'phase':10} {'product':24} {'offers':>7} {'accepted':>9} {'rate':>6}")
    for row in rows:
        print(
            f"{row['phase']:10} {row['product']:24} {row['offers']:7d} "
            f"{row['accepted']:9d} {row['rate']:6.3f}"
        )
    return 0


# --- erase ------------------------------------------------------------------------------


def cmd_erase(settings: Settings, args: argparse.Namespace) -> int:
    from streams.kafka import ensure_topics, make_producer, produce_confirmed
    from streams.produce import erasure_event, route

    chosen = _one_identifier(args, "erase")
    if chosen is None:
        return 2
    kind, value = chosen
    ensure_topics(settings)
    line = erasure_event(kind, value, args.requested_by)
    produce_confirmed(make_producer(settings), [route(settings, line)])
    print(
        f"erasure requested ({orjson.loads(line)['event_id']}); the worker removes the "
        "profile and emits profile.erased"
    )
    return 0


# --- tail -------------------------------------------------------------------------------


def cmd_snapshot(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from state.registry import ModelRegistry, customer_model_in_use
    from state.stores import store_for
    from streams.profiles import snapshot

    async def export(handle: Any, bar: Any) -> int:
        store = store_for(settings)
        try:
            registry = ModelRegistry(store.redis, settings.redis_key_prefix)
            model = await customer_model_in_use(registry, settings.customer_model_version)

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            document = document_settings(settings)
            return await snapshot(settings, store, model, document, handle.write, progress)
        finally:
            await store.close()

    with (
        Path(args.jsonl).open("wb") as handle,
        tqdm(unit="profiles", desc="snapshot", file=sys.stderr) as bar,
    ):
        written = asyncio.run(export(handle, bar))
    print(f"{written} profiles written to {args.jsonl}", file=sys.stderr)
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import datetime

    from tqdm import tqdm

    from state.store import redis_client
    from streams.kafka import check_broker
    from streams.replay import replay_parallel, verify

    prefix = args.namespace or f"replay-{time.strftime('%Y%m%d-%H%M%S')}:"
    target = settings.model_copy(
        update={"redis_url": args.redis_url or settings.redis_url, "redis_key_prefix": prefix}
    )
    if prefix == settings.redis_key_prefix and target.redis_url == settings.redis_url:
        print("the replay target must differ from the live namespace", file=sys.stderr)
        return 2
    client = redis_client(target, sync=True)
    if next(client.scan_iter(match=f"{prefix}*", count=100), None) is not None:
        print(f"namespace {prefix!r} is not empty; choose a fresh one", file=sys.stderr)
        return 2
    since_ms = int(datetime.fromisoformat(args.since).timestamp() * 1000) if args.since else None
    check_broker(settings)
    yield_cpu(settings)  # a backfill: the live workers on this host go first

    with tqdm(unit="events", desc="replayed", file=sys.stderr) as bar:

        def progress(events: int, _seconds: float) -> None:
            bar.update(events - bar.n)

        summary = replay_parallel(
            settings,
            target,
            args.processes,
            since_ms=since_ms,
            idle_seconds=args.idle_timeout,
            progress=progress,
        )
    result: dict[str, Any] = {
        "namespace": prefix,
        "redis_url": without_password(target.redis_url),
        "events": summary.events,
        "customers": summary.customers,
        "outcomes": dict(summary.outcomes),
        "seconds": round(summary.seconds, 3),
        "events_per_second": round(summary.rate, 1),
    }
    if args.verify:
        report = asyncio.run(verify(settings, target))
        result["differences"] = report
    _print_replay(result, args.json, args.verify)
    return 1 if args.verify and result["differences"] else 0


def _print_replay(result: dict[str, Any], as_json: bool, verified: bool) -> None:
    if as_json:
        _print_json(result)
        return
    outcomes = ", ".join(f"{kind} {count:,}" for kind, count in sorted(result["outcomes"].items()))
    print(
        f"replayed {result['events']:,} events into {result['namespace']!r} in "
        f"{result['seconds']:.1f} s ({result['events_per_second']:,.0f}/s): "
        f"{result['customers']:,} customers, {outcomes}"
    )
    if verified:
        if not result["differences"]:
            print("verify: every rebuilt profile equals the live one")
        for cid, paths in sorted(result["differences"].items()):
            print(f"verify: {cid} differs at {', '.join(paths)}")


def cmd_tail(settings: Settings, args: argparse.Namespace) -> int:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

    from streams.kafka import check_broker, client_config

    check_broker(settings)
    topic = (
        args.topic if args.topic.startswith(settings.topic_prefix) else settings.topic(args.topic)
    )
    consumer = Consumer(
        client_config(settings)
        | {"group.id": f"portrait-tail-{time.time_ns()}", "enable.auto.commit": False}
    )
    # Assign partitions directly: no group join to wait for, and no offsets committed.
    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        print(f"tail: no topic {topic}", file=sys.stderr)
        consumer.close()
        return 1
    start = OFFSET_BEGINNING if args.from_beginning else OFFSET_END
    consumer.assign([TopicPartition(topic, p, start) for p in metadata.partitions])
    seen, idle_since = 0, time.monotonic()
    try:
        while args.max is None or seen < args.max:
            message = consumer.poll(0.2)
            if message is None or message.error():
                if args.idle_timeout and time.monotonic() - idle_since > args.idle_timeout:
                    break
                continue
            idle_since = time.monotonic()
            seen += 1
            value = message.value() or b""
            if args.json:
                sys.stdout.write(value.decode("utf-8", errors="replace") + "\n")
                sys.stdout.flush()
            else:
                from cli.render import render_output

                print(render_output(value))
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


# --- schemas ----------------------------------------------------------------------------


def cmd_schemas(_settings: Settings, args: argparse.Namespace) -> int:
    from cli.schemas import stale_schemas, write_schemas

    if args.check:
        stale = stale_schemas()
        for name in stale:
            print(f"schemas/{name} differs from the event models", file=sys.stderr)
        return 1 if stale else 0
    for path in write_schemas():
        print(path)
    return 0


# --- emotion ----------------------------------------------------------------------------


def cmd_emotion(_settings: Settings, args: argparse.Namespace) -> int:
    from models.emotion import default_model

    model = default_model()
    if args.jsonl:
        return _emotion_jsonl(model, Path(args.jsonl), args.batch)
    if not args.text:
        print("emotion: give a text or --jsonl FILE", file=sys.stderr)
        return 2
    [result] = model.predict([" ".join(args.text)])
    if args.json:
        _print_json(result.as_dict(), pretty=False)
    else:
        scores = "  ".join(f"{label} {score:.3f}" for label, score in result.scores.items())
        finer = f"  ({result.emotion})" if result.emotion else ""
        print(f"{result.label}{finer}  {scores}")
    return 0


def _emotion_jsonl(model: Any, path: Path, batch: int) -> int:
    """Each line back with ``label`` and ``scores`` added, in order; bad lines reported.
    ``-`` reads standard input."""
    if str(path) == "-":
        lines = [line for line in sys.stdin.buffer if line.strip()]
    else:
        with path.open("rb") as handle:
            lines = [line for line in handle if line.strip()]
    bad = 0
    for start in range(0, len(lines), batch):
        rows: list[dict[str, Any] | None] = []
        for line in lines[start : start + batch]:
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                row = None
            rows.append(row if isinstance(row, dict) and isinstance(row.get("text"), str) else None)
        texts = [row["text"] for row in rows if row is not None]
        results = iter(model.predict(texts))
        for number, row in enumerate(rows, start=start + 1):
            if row is None:
                bad += 1
                print(f'line {number}: no "text" string; skipped', file=sys.stderr)
                continue
            result = next(results)
            row.update(label=result.label, scores=result.scores, emotion=result.emotion)
            sys.stdout.write(orjson.dumps(row).decode("utf-8") + "\n")
    sys.stdout.flush()
    return 1 if bad else 0


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


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``portrait`` command."""
    parser = argparse.ArgumentParser(prog="portrait", description=__doc__)
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks instead of one-line errors"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="start, stop or show the embedded local Kafka + Redis")
    stack.add_argument("action", choices=["up", "down", "status"])
    stack.add_argument("--json", action="store_true")
    stack.set_defaults(func=cmd_stack)

    worker = sub.add_parser("worker", help="run the Faust worker")
    worker.add_argument(
        "--lane",
        choices=["all", "realtime", "bulk"],
        default=None,
        help="the lanes this worker serves (default PORTRAIT_LANE, all): realtime reads "
        "calls and chat, bulk the channel events and commands",
    )
    worker.add_argument(
        "--processes",
        type=int,
        default=1,
        help="worker processes in one consumer group (one per core); HTTP ports count up",
    )
    worker.set_defaults(func=cmd_worker)

    publisher = sub.add_parser(
        "publish-profiles",
        help="publish portrait.profiles from portrait.profile-changes (a worker starts one)",
    )
    publisher.set_defaults(func=cmd_publish_profiles)

    serve = sub.add_parser(
        "serve", help="serve the HTTP API and the agent page alone (read-only; no worker)"
    )
    serve.add_argument("--port", type=int, default=None, help="default PORTRAIT_HTTP_PORT")
    serve.set_defaults(func=cmd_serve)

    produce = sub.add_parser("produce", help="produce events from a JSONL file to their topics")
    produce.add_argument("file")
    produce.add_argument("--topic", help="send every line raw to this topic (short name)")
    produce.set_defaults(func=cmd_produce)

    profile = sub.add_parser("profile", help="look a profile up")
    profile_sub = profile.add_subparsers(dest="profile_action", required=True)
    get = profile_sub.add_parser("get", help="print the profile found by one identifier")
    for kind, flag in IDENTIFIER_FLAGS.items():
        get.add_argument(flag, dest=kind)
    get.add_argument("--json", action="store_true", help="print the profile document as JSON")
    get.set_defaults(func=cmd_profile)

    account = sub.add_parser("account", help="look an account up")
    account_sub = account.add_subparsers(dest="account_action", required=True)
    account_get = account_sub.add_parser("get", help="print an account: people, stats")
    account_get.add_argument("--account-no", required=True)
    account_get.add_argument("--json", action="store_true", help="print the account as JSON")
    account_get.set_defaults(func=cmd_account)

    problems = sub.add_parser(
        "problems", help="a customer's past problems; --like: the 3 most similar to a text"
    )
    for kind, flag in IDENTIFIER_FLAGS.items():
        problems.add_argument(flag, dest=kind)
    problems.add_argument("--like", help="rank by embedding similarity to this text")
    problems.add_argument("--json", action="store_true")
    problems.set_defaults(func=cmd_problems)

    trends = sub.add_parser("trends", help="top keywords and intents of recent time windows")
    trends.add_argument("--window", help="bucket size, e.g. 1h, 6h, 1d (default: the window)")
    trends.add_argument("--last", type=int, default=5, help="how many recent buckets")
    trends.add_argument("--json", action="store_true")
    trends.set_defaults(func=cmd_trends)

    imports = sub.add_parser("import", help="load records from own or third-party sources")
    imports.add_argument("file", help="JSONL or CSV (by extension, or --format)")
    imports.add_argument("--format", choices=["jsonl", "csv"])
    imports.add_argument("--source", default="import", help="source name, e.g. crm, third_party")
    imports.add_argument(
        "--map",
        action="append",
        metavar="COLUMN=TARGET",
        help="rename a column: an identifier kind, attr:<name>, occurred_at or ignore (repeatable)",
    )
    imports.add_argument("--confidence", type=float, help="confidence of the imported values")
    imports.set_defaults(func=cmd_import)

    products = sub.add_parser("products", help="phase × product offers, acceptances, rates")
    products.add_argument("--phase", choices=["opening", "discovery", "proposal", "closing"])
    products.add_argument("--json", action="store_true")
    products.set_defaults(func=cmd_products)

    erase = sub.add_parser("erase", help="request erasure of a customer (right to be forgotten)")
    for kind, flag in IDENTIFIER_FLAGS.items():
        erase.add_argument(flag, dest=kind)
    erase.add_argument("--requested-by", help="who asked (kept in the command, not the profile)")
    erase.set_defaults(func=cmd_erase)

    tail = sub.add_parser("tail", help="print the events of a topic as they arrive")
    tail.add_argument("topic", help="full name or short name (profile-changes, dlq …)")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--json", action="store_true", help="one raw JSON event per line")
    tail.add_argument("--max", type=int, help="stop after this many events")
    tail.add_argument("--idle-timeout", type=float, help="stop after this many idle seconds")
    tail.set_defaults(func=cmd_tail)

    snap = sub.add_parser("snapshot", help="write every live profile in Redis to a JSONL file")
    snap.add_argument("--jsonl", required=True, help="the file to write, one document a line")
    snap.set_defaults(func=cmd_snapshot)

    replay = sub.add_parser("replay", help="rebuild profiles from the input topics")
    replay.add_argument("--namespace", help="fresh Redis key prefix (default replay-<time>:)")
    replay.add_argument("--redis-url", help="Redis (database) to rebuild into (default: live)")
    replay.add_argument("--since", help="replay events from this RFC 3339 time on")
    replay.add_argument("--idle-timeout", type=float, default=3.0, help="stop after idle seconds")
    replay.add_argument(
        "--processes", type=int, default=1, help="engines, each on its share of the partitions"
    )
    replay.add_argument("--verify", action="store_true", help="compare with the live profiles")
    replay.add_argument("--json", action="store_true")
    replay.set_defaults(func=cmd_replay)

    schemas = sub.add_parser("schemas", help="write (or --check) the JSON Schemas")
    schemas.add_argument("--check", action="store_true")
    schemas.set_defaults(func=cmd_schemas)

    emotion = sub.add_parser("emotion", help="emotion of a text, or of every line of a JSONL")
    emotion.add_argument("text", nargs="*", help="the text (words are joined by spaces)")
    emotion.add_argument(
        "--jsonl", help='read lines with "text" (a file, or - for stdin), write them back labelled'
    )
    emotion.add_argument("--json", action="store_true", help="one JSON object for a text")
    emotion.add_argument("--batch", type=int, default=256, help="texts per model call")
    emotion.set_defaults(func=cmd_emotion)

    demo = sub.add_parser("demo", help="run the demo story end to end")
    demo.add_argument("--keep-stack", action="store_true", help="leave the stack running")
    demo.set_defaults(func=cmd_demo)

    bench = sub.add_parser("bench", help="naive Faust vs Portrait vs plain loop, events/s")
    bench.add_argument("--events", type=int, default=100_000)
    bench.add_argument(
        "--customers", type=int, default=None, help="default 10,000 (--api: 2,000 profiles)"
    )
    bench.add_argument("--json", action="store_true")
    bench.add_argument(
        "--emotion", action="store_true", help="emotion model alone vs the worker reading emotion"
    )
    bench.add_argument("--messages", type=int, default=10_000, help="chat messages for --emotion")
    bench.add_argument(
        "--cluster",
        action="store_true",
        help="the same events on standalone Redis and a local 3-master cluster: events/s, "
        "script time per event per shard, each shard's share",
    )
    bench.add_argument(
        "--durability",
        action="store_true",
        help="a worker per PORTRAIT_REDIS_DURABILITY (none, aof, replica): events/s and ratios",
    )
    bench.add_argument(
        "--replay", action="store_true", help="replay engine vs a plain consume → produce loop"
    )
    bench.add_argument(
        "--prompts", action="store_true", help="call segment → agent prompt latency at --rate"
    )
    bench.add_argument(
        "--rate",
        type=int,
        default=None,
        help="--prompts: segments/s (200); --api: requests/s (500)",
    )
    bench.add_argument(
        "--seconds", type=float, default=None, help="how long --prompts (20) or --api (10) sends"
    )
    bench.add_argument(
        "--api",
        action="store_true",
        help="profile look-ups against portrait serve at --rate, and prompt delivery over SSE",
    )
    bench.add_argument(
        "--recovery",
        action="store_true",
        help="two workers, one killed and restarted every --every seconds (--kills times) "
        "while events flow: how long until every partition's outputs resume",
    )
    bench.add_argument("--kills", type=int, default=6, help="--recovery: kills")
    bench.add_argument("--every", type=float, default=25.0, help="--recovery: seconds apart")
    bench.add_argument(
        "--loss",
        type=int,
        default=0,
        metavar="RUNS",
        help="RUNS two-process runs of --events: every output counted by an independent "
        "reader, every missing event traced (on the topic, pending, applied, DLQ)",
    )
    bench.add_argument(
        "--growth",
        action="store_true",
        help="fresh customers against customers with a long history: events/s, Redis µs, bytes",
    )
    bench.add_argument("--history", type=int, default=500, help="events per mature customer")
    bench.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="--cluster, --growth: rounds of both sides (median shown)",
    )
    bench.add_argument(
        "--backlog",
        type=int,
        default=0,
        help="--prompts: channel events produced at once before the segments (and a run "
        "without segments, for the drain rate)",
    )
    bench.add_argument("--chats", type=int, default=2000, help="chat events per --growth run")
    bench.add_argument(
        "--channel-events", type=int, default=3000, help="channel events per --growth run"
    )
    bench.set_defaults(func=cmd_bench)

    chaos = sub.add_parser(
        "chaos",
        help="fault suite: a seeded workload, two workers, faults, compared with an oracle",
    )
    chaos.add_argument("--seed", type=int, default=7)
    chaos.add_argument("--people", type=int, default=300)
    chaos.add_argument("--events-per-person", type=int, default=12)
    chaos.add_argument("--workdir", type=Path, help="keep the logs and AOF here")
    chaos.add_argument("--faults", help="comma-separated, in order (default: all)")
    chaos.add_argument("--short", action="store_true", help="three faults only (make test)")
    chaos.set_defaults(func=cmd_chaos)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``portrait`` console script.

    A service that does not answer is one line on stderr (which address, and how to
    start the local stack) and exit code 3 (Redis) or 4 (Kafka), without a traceback
    unless ``--debug``.
    """
    import redis.exceptions

    from portrait.config import ConfigurationError

    args = build_parser().parse_args(argv)
    settings = load_settings()
    try:
        code: int = args.func(settings, args)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        return _unreachable(ServiceUnreachable("Redis", settings.redis_url), exc, args.debug)
    except redis.exceptions.RedisClusterException as exc:
        if "reachable node" not in str(exc):  # not "no node of the cluster answers"
            raise
        return _unreachable(ServiceUnreachable("Redis", settings.redis_url), exc, args.debug)
    except ServiceUnreachable as exc:
        return _unreachable(exc, exc, args.debug)
    except ConfigurationError as exc:
        print(f"portrait: {exc}", file=sys.stderr)
        return 2
    return code


def _unreachable(error: ServiceUnreachable, cause: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(cause)
    print(f"portrait: {error.hint()}", file=sys.stderr)
    return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
