"""``portrait bench --cluster``: the same events on a standalone Redis, on a local
3-master Redis Cluster and on a one-node cluster holding every slot.

The one-node cluster runs the same cross-slot protocol on one process: its ratio to
standalone is what the protocol and cluster mode cost, apart from three nodes sharing
this machine's cores.

One ``portrait worker`` per store takes the same channel events through the local broker
(throughput from the outputs, as in ``portrait bench``), in ``--rounds`` rounds (3) whose
order of the two sides alternates; the round with the median ratio is printed, with
every round's ratios (this machine's speed drifts by more than the figures differ).
Redis time is read from ``INFO commandstats`` of every node before and after (EVALSHA,
EVAL and FCALL microseconds: the state script and the small scripts of the cluster
protocol): script time per event in total and per shard, and each shard's share of the
total.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import redis

from cli.bench import (
    Measured,
    _fill,
    _settings_for,
    _subprocess_contender,
    bench_events,
    script_usec,
)
from cli.stack import LocalStack, cluster_ports, on_free_ports, start_cluster, stop_process
from portrait.config import Settings


def _usage(port: int) -> tuple[float, float]:
    """Microseconds a node has spent in scripts (``INFO commandstats``: wall time inside
    the calls) and on its CPU in all (``INFO cpu``: user + system, every command and the
    network, but not the time it waited for a core)."""
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        cpu = client.info("cpu")
        return script_usec(client), (cpu["used_cpu_user"] + cpu["used_cpu_sys"]) * 1e6
    finally:
        client.close()


def _spent(ports: list[int], before: list[tuple[float, float]]) -> list[tuple[float, float]]:
    now = [_usage(p) for p in ports]
    return [(n[0] - b[0], n[1] - b[1]) for n, b in zip(now, before, strict=True)]


def _run(settings: Settings, name: str, payload: list[Any], events: int) -> Measured:
    _fill(settings, settings.topic("channel-events"), payload)
    command = [sys.executable, "-m", "cli", "worker", "--lane", "bulk"]
    out = settings.topic("profile-changes")
    return _subprocess_contender(
        name, settings, command, out, events, {"PORTRAIT_LOG_LEVEL": "WARNING"}
    )


def _side(
    base: Settings, ports: list[int] | None, payload: list[Any], events: int
) -> tuple[Measured, list[tuple[float, float]]]:
    """One worker on the standalone Redis (``ports`` None) or on the cluster of these
    ports: its figures and each node's (script, CPU) microseconds."""
    if ports is None:
        settings, nodes = _settings_for(base, "standalone"), [base.redis_port]
    else:
        settings = _settings_for(base, "cluster").model_copy(
            update={"redis_url": f"redis://127.0.0.1:{ports[0]}/0", "redis_cluster": True}
        )
        nodes = ports
    before = [_usage(port) for port in nodes]
    measured = _run(settings, "cluster" if ports else "standalone", payload, events)
    return measured, _spent(nodes, before)


def run_cluster_bench(
    base: Settings, events: int, customers: int, as_json: bool, rounds: int = 3
) -> int:
    """Rounds of one worker on standalone Redis and one on the 3-shard cluster (the order
    alternating, so drift of this machine's speed falls on both sides); print the round
    whose script-time ratio is the median, with every round's ratios."""
    base = on_free_ports(base).model_copy(update={"redis_cluster": False})
    stack = LocalStack(base)
    payload = bench_events(events, customers)
    summaries: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="portrait-cluster-") as tmp:
        processes: list[subprocess.Popen[bytes]] = []
        try:
            stack.up()
            ports = cluster_ports()
            processes = start_cluster(ports, Path(tmp))
            one = _one_node_ports(ports)
            processes += start_cluster(one, Path(tmp))
            clusters: dict[str, list[int] | None] = {
                "standalone": None,
                "cluster": ports,
                "one_node": one,
            }
            names = list(clusters)
            for n in range(max(1, rounds)):
                sides: dict[str, tuple[Measured, list[tuple[float, float]]]] = {}
                turn = n % len(names)
                order = names[turn:] + names[:turn]
                for side in order:
                    sides[side] = _side(base, clusters[side], payload, events)
                (standalone, [alone]), (cluster, shards) = sides["standalone"], sides["cluster"]
                summary = _summary(standalone, cluster, alone, shards, events)
                single, [node] = sides["one_node"]
                summaries.append(summary | _one_node(single, node, alone, events))
        finally:
            for process in processes:
                stop_process(process)
            stack.down()
    summary = _median_round(summaries)
    _print(summary, as_json)
    return 0 if summary["lossless"] else 1


def _one_node_ports(taken: list[int]) -> list[int]:
    """A port for the one-node cluster, apart from the 3-node cluster's."""
    while True:
        [port] = cluster_ports(1)
        if all(abs(port - other) > 1 for other in taken):
            return [port]


def _one_node(
    measured: Measured, node: tuple[float, float], alone: tuple[float, float], events: int
) -> dict[str, Any]:
    """The one-node cluster's figures and their ratios to standalone (``alone``)."""
    return {
        "one_node": {
            "events_per_second": round(measured.rate, 1),
            "script_us_per_event": round(node[0] / events, 1),
            "redis_cpu_us_per_event": round(node[1] / events, 1),
            "vs_standalone_script_time": round(node[0] / alone[0], 2) if alone[0] else None,
            "vs_standalone_redis_cpu": round(node[1] / alone[1], 2) if alone[1] else None,
            "lossless": measured.unique == events,
        }
    }


def _median_round(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median script-time ratio, with every round's ratios (script
    time, Redis CPU) and whether every round was lossless."""
    ranked = sorted(summaries, key=lambda s: s["cluster_vs_standalone_script_time"] or 0.0)
    return {
        **ranked[(len(ranked) - 1) // 2],
        "rounds": len(summaries),
        "round_script_time_ratios": [s["cluster_vs_standalone_script_time"] for s in summaries],
        "round_redis_cpu_ratios": [s["cluster_vs_standalone_redis_cpu"] for s in summaries],
        "round_one_node_script_time_ratios": [
            s["one_node"]["vs_standalone_script_time"] for s in summaries
        ],
        "round_script_us_per_event": [
            [s["script_us_per_event"]["standalone"], s["script_us_per_event"]["cluster"]]
            for s in summaries
        ],
        "lossless": all(s["lossless"] and s["one_node"]["lossless"] for s in summaries),
    }


def _summary(
    standalone: Measured,
    cluster: Measured,
    alone: tuple[float, float],
    shards: list[tuple[float, float]],
    events: int,
) -> dict[str, Any]:
    """Script and CPU microseconds per event; ``alone`` and each of ``shards``: (script,
    CPU) microseconds of the run."""
    alone_usec, shard_usec = alone[0], [u for u, _cpu in shards]
    total = sum(shard_usec) or 1.0
    cpu = sum(c for _u, c in shards)
    return {
        "events": events,
        "events_per_second": {
            "standalone": round(standalone.rate, 1),
            "cluster": round(cluster.rate, 1),
        },
        "script_us_per_event": {
            "standalone": round(alone_usec / events, 1),
            "cluster": round(total / events, 1),
            "cluster_per_shard": [round(u / events, 1) for u in shard_usec],
        },
        "shard_share": [round(u / total, 3) for u in shard_usec],
        "cluster_vs_standalone_script_time": round(total / alone_usec, 2) if alone_usec else None,
        "redis_cpu_us_per_event": {
            "standalone": round(alone[1] / events, 1),
            "cluster": round(cpu / events, 1),
        },
        "cluster_vs_standalone_redis_cpu": round(cpu / alone[1], 2) if alone[1] else None,
        "lossless": standalone.unique == events and cluster.unique == events,
    }


def _print(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
        return
    rates, script = summary["events_per_second"], summary["script_us_per_event"]
    print(
        f"{summary['events']} channel events, one worker each; the median of "
        f"{summary['rounds']} rounds (script-time ratios "
        f"{', '.join(f'{r}x' for r in summary['round_script_time_ratios'])})"
    )
    print(
        f"  standalone  {rates['standalone']:8.0f} events/s  "
        f"script {script['standalone']:6.1f} µs/event"
    )
    print(
        f"  cluster (3) {rates['cluster']:8.0f} events/s  script {script['cluster']:6.1f} µs/event "
        f"({summary['cluster_vs_standalone_script_time']}x standalone)"
    )
    for n, (us, share) in enumerate(
        zip(script["cluster_per_shard"], summary["shard_share"], strict=True)
    ):
        print(f"    shard {n}   {us:6.1f} µs/event  share {share:.3f}")
    cpu = summary["redis_cpu_us_per_event"]
    print(
        f"  Redis CPU (all commands) µs/event: standalone {cpu['standalone']:.1f}, "
        f"cluster {cpu['cluster']:.1f} ({summary['cluster_vs_standalone_redis_cpu']}x)"
    )
    one = summary["one_node"]
    print(
        f"  cluster (1) {one['events_per_second']:8.0f} events/s  script "
        f"{one['script_us_per_event']:6.1f} µs/event ({one['vs_standalone_script_time']}x "
        f"standalone), Redis CPU {one['redis_cpu_us_per_event']:.1f} µs/event "
        f"({one['vs_standalone_redis_cpu']}x): the protocol on one node, every slot"
    )
    print(f"lossless: {summary['lossless']}")
