"""``portrait bench --cluster``: the same events on a standalone Redis and on a local
3-master Redis Cluster.

One ``portrait worker`` per store takes the same channel events through the local broker
(throughput from the outputs, as in ``portrait bench``). Redis time is read from ``INFO
commandstats`` of every node before and after (EVALSHA, EVAL and FCALL microseconds: the
state script and the small scripts of the cluster protocol): script time per event in total
and per shard, and each shard's share of the total.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import redis

from portrait.bench import (
    Measured,
    _fill,
    _settings_for,
    _subprocess_contender,
    bench_events,
    script_usec,
)
from portrait.config import Settings
from portrait.stack import (
    LocalStack,
    cluster_ports,
    form_cluster,
    on_free_ports,
    port_answers,
    redis_command,
    stop_process,
)


def _script_usec(port: int) -> float:
    client = redis.Redis(host="127.0.0.1", port=port)
    try:
        return script_usec(client)
    finally:
        client.close()


def _start_cluster(workdir: Path) -> tuple[list[int], list[subprocess.Popen[bytes]]]:
    ports = cluster_ports()
    processes = [
        subprocess.Popen(
            redis_command(port, cluster_dir=workdir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        for port in ports
    ]
    for port in ports:
        while not port_answers(port):
            pass
    form_cluster(ports)
    return ports, processes


def _pin(redis_pids: list[int], others: list[int]) -> str:
    """Every Redis server on the last core; this process (so the worker it starts next)
    and ``others`` (the broker) on the rest. Unpinned, three shards that each run a third
    of the time on a 2-core machine wake on whichever core is free, with cold caches: a
    call costs about 1.3x what it costs on a server that stays on its core (measured
    with the same function alternating over three nodes), which is this machine's
    artefact, not the protocol's. Both stores are measured the same way."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return "not pinned (one core)"
    for pid in redis_pids:
        os.sched_setaffinity(pid, {cores[-1]})
    for pid in [0, *others]:
        os.sched_setaffinity(pid, set(cores[:-1]))
    return f"Redis servers on core {cores[-1]}, worker and broker on {cores[:-1]}"


def _run(settings: Settings, name: str, payload: list[Any], events: int) -> Measured:
    _fill(settings, settings.topic("channel-events"), payload)
    command = [sys.executable, "-m", "portrait.cli", "worker", "--lane", "bulk"]
    out = settings.topic("profile-changes")
    return _subprocess_contender(
        name, settings, command, out, events, {"PORTRAIT_LOG_LEVEL": "WARNING"}
    )


def run_cluster_bench(
    base: Settings, events: int, customers: int, as_json: bool, pin: bool = True
) -> int:
    """One worker on standalone Redis, one on the 3-shard cluster; print the figures.
    ``pin``: Redis servers on one core, worker and broker on the others (:func:`_pin`)."""
    base = on_free_ports(base).model_copy(update={"redis_cluster": False})
    stack = LocalStack(base)
    payload = bench_events(events, customers)
    affinity = os.sched_getaffinity(0)
    with tempfile.TemporaryDirectory(prefix="portrait-cluster-") as tmp:
        processes: list[subprocess.Popen[bytes]] = []
        try:
            stack.up()
            started = {p.service: p.pid for p in stack.recorded()}
            ports, processes = _start_cluster(Path(tmp))
            pinning = "not pinned"
            if pin:
                servers = [started.get("redis", 0), *(p.pid for p in processes)]
                pinning = _pin(
                    [p for p in servers if p],
                    [started.get("kafka", 0)] if "kafka" in started else [],
                )
            alone = _settings_for(base, "standalone")
            before = _script_usec(base.redis_port)
            standalone = _run(alone, "standalone", payload, events)
            alone_usec = _script_usec(base.redis_port) - before
            spread = _settings_for(base, "cluster").model_copy(
                update={"redis_url": f"redis://127.0.0.1:{ports[0]}/0", "redis_cluster": True}
            )
            before_nodes = [_script_usec(p) for p in ports]
            cluster = _run(spread, "cluster", payload, events)
            shard_usec = [_script_usec(p) - b for p, b in zip(ports, before_nodes, strict=True)]
        finally:
            for process in processes:
                stop_process(process)
            stack.down()
            os.sched_setaffinity(0, affinity)
    summary = _summary(standalone, cluster, alone_usec, shard_usec, events) | {"cpu": pinning}
    _print(summary, as_json)
    return 0 if summary["lossless"] else 1


def _summary(
    standalone: Measured,
    cluster: Measured,
    alone_usec: float,
    shard_usec: list[float],
    events: int,
) -> dict[str, Any]:
    total = sum(shard_usec) or 1.0
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
        "lossless": standalone.unique == events and cluster.unique == events,
    }


def _print(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
        return
    rates, script = summary["events_per_second"], summary["script_us_per_event"]
    print(f"{summary['events']} channel events, one worker each; {summary['cpu']}")
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
    print(f"lossless: {summary['lossless']}")
