"""``portrait bench --cluster``: the same events on a standalone Redis and on a local
3-master Redis Cluster.

One ``portrait worker`` per store takes the same channel events through the local broker
(throughput from the outputs, as in ``portrait bench``). Redis time is read from ``INFO
commandstats`` of every node before and after (EVALSHA, EVAL and FCALL microseconds: the
state script and the small scripts of the cluster protocol): script time per event in total
and per shard, and each shard's share of the total.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
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
    StackError,
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
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            processes.append(
                subprocess.Popen(
                    redis_command(port, cluster_dir=workdir),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        deadline = time.monotonic() + 10
        for port, process in zip(ports, processes, strict=True):
            while not port_answers(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise StackError(f"the cluster node on port {port} did not start")
                time.sleep(0.02)
        form_cluster(ports)
    except BaseException:  # a node that failed to start or join: none left running
        for process in processes:
            stop_process(process)
        raise
    return ports, processes


def _run(settings: Settings, name: str, payload: list[Any], events: int) -> Measured:
    _fill(settings, settings.topic("channel-events"), payload)
    command = [sys.executable, "-m", "portrait.cli", "worker", "--lane", "bulk"]
    out = settings.topic("profile-changes")
    return _subprocess_contender(
        name, settings, command, out, events, {"PORTRAIT_LOG_LEVEL": "WARNING"}
    )


def run_cluster_bench(base: Settings, events: int, customers: int, as_json: bool) -> int:
    """One worker on standalone Redis, one on the 3-shard cluster; print the figures."""
    base = on_free_ports(base).model_copy(update={"redis_cluster": False})
    stack = LocalStack(base)
    payload = bench_events(events, customers)
    with tempfile.TemporaryDirectory(prefix="portrait-cluster-") as tmp:
        processes: list[subprocess.Popen[bytes]] = []
        try:
            stack.up()
            alone = _settings_for(base, "standalone")
            before = _script_usec(base.redis_port)
            standalone = _run(alone, "standalone", payload, events)
            alone_usec = _script_usec(base.redis_port) - before
            ports, processes = _start_cluster(Path(tmp))
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
    summary = _summary(standalone, cluster, alone_usec, shard_usec, events)
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
    print(f"{summary['events']} channel events, one worker each")
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
