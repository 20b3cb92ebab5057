"""``portrait bench --api``: profile look-ups against ``portrait serve``, and prompt delivery
over Server-Sent Events.

On the embedded stack: a worker builds ``customers`` profiles (channel events) and stops;
``portrait serve`` then answers ``GET /v1/profiles/{customer_id}`` (a service token,
random customers) at a fixed ``rate`` for ``seconds`` — open loop: each request is sent
at its scheduled time whatever the earlier ones do, and its latency counts from that
time, so a stall shows in the tail instead of slowing the load. The baseline is the same
load on ``/livez`` of the same process (no Redis, no document): the ratio of the two p99s
is the cost of a profile over the server's own floor.

Prompts: a worker runs calls whose every customer turn changes the advice; SSE streams
of ``portrait serve`` (one per agent) and a plain consumer of the prompts topic both
record when each prompt arrives. Delivery latency is arrival minus the prompt's Kafka
timestamp (when the worker produced it), for the streams and for the plain consumer
(the baseline: what the broker itself adds).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from cli.bench import _fill, _settings_for, bench_events
from cli.bench.latency import CALLS, PromptWatcher, _percentile, _segment, _started
from cli.stack import LocalStack, free_port, on_free_ports, stop_process
from portrait.config import Settings
from state.stores import store_for
from streams.kafka import ensure_topics, make_producer
from streams.replay import customer_ids

TOKEN = "bench-service-token"
SUPERVISOR = "bench-supervisor-token"


def _env(settings: Settings, tokens: Path) -> dict[str, str]:
    return (
        dict(os.environ)
        | settings.as_env()
        | {"PORTRAIT_LOG_LEVEL": "WARNING", "PORTRAIT_API_TOKENS_FILE": str(tokens)}
    )


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _tokens_file(directory: Path) -> Path:
    path = directory / "tokens.json"
    listed = [
        {"subject": "bench", "scope": scope, "token_sha256": hashlib.sha256(t.encode()).hexdigest()}
        for t, scope in ((TOKEN, "service"), (SUPERVISOR, "supervisor"))
    ]
    path.write_text(json.dumps(listed))
    return path


async def _wait_ready(port: int, timeout: float = 60.0) -> None:
    """Until ``/readyz`` on the port answers 200."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"http://127.0.0.1:{port}/readyz") as answer:
                    if answer.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the process on port {port} did not become ready")


async def _load(port: int, paths: list[str], rate: int, seconds: float) -> dict[str, Any]:
    """Open-loop GETs at ``rate``/s for ``seconds``: latencies from each scheduled time."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=256)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(path: str, scheduled: float) -> None:
            nonlocal errors
            try:
                async with session.get(f"http://127.0.0.1:{port}{path}") as answer:
                    await answer.read()
                    if answer.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
            latencies.append(time.perf_counter() - scheduled)

        rng = random.Random(7)
        started = time.perf_counter()
        tasks = []
        for i in range(int(rate * seconds)):
            scheduled = started + i / rate
            if (pause := scheduled - time.perf_counter()) > 0:
                await asyncio.sleep(pause)
            tasks.append(asyncio.ensure_future(one(rng.choice(paths), scheduled)))
        await asyncio.gather(*tasks)
        span = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "errors": errors,
        "rate": round(len(latencies) / span, 1),
        "p50_ms": round(_percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies, default=0.0) * 1000, 2),
    }


class SseWatcher(threading.Thread):
    """One agent's prompt stream from ``portrait serve``: prompt id → arrival (epoch s)."""

    def __init__(self, port: int, agent: str) -> None:
        super().__init__(daemon=True)
        self.port, self.agent = port, agent
        self.arrived: dict[str, float] = {}
        self.open = threading.Event()

    def run(self) -> None:
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {"Authorization": f"Bearer {SUPERVISOR}"}
        connection.request("GET", f"/v1/agents/{self.agent}/prompts", headers=headers)
        answer = connection.getresponse()
        self.open.set()
        try:
            for raw in answer:
                if raw.startswith(b"id: "):
                    self.arrived[raw[4:].strip().decode()] = time.time()
        except (OSError, ValueError, AttributeError):
            return


class PromptIdWatcher(PromptWatcher):
    """A plain consumer of the prompts topic from the start: prompt id → (Kafka timestamp,
    arrival), both epoch seconds."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.stamps: dict[str, tuple[float, float]] = {}

    def record(self, body: dict[str, Any], now: float, stamp: float) -> None:
        self.stamps[body["prompt_id"]] = (stamp, now)


def _send_turns(settings: Settings, rate: int, seconds: float) -> None:
    """Start the calls, then ``rate`` customer turns a second for ``seconds``."""
    producer = make_producer(settings, **{"linger.ms": 0})
    topic = settings.topic("calls")
    for call in range(CALLS):
        producer.produce(topic, orjson.dumps(_started(call)), f"lat-call-{call:04d}")
    interval, started = 1.0 / rate, time.perf_counter()
    for i in range(int(rate * seconds)):
        while (pause := started + i * interval - time.perf_counter()) > 0:
            time.sleep(min(pause, 0.002))
        call, seq = i % CALLS, i // CALLS
        producer.produce(
            topic, orjson.dumps(_segment(call, seq, seq * 5_000)), f"lat-call-{call:04d}"
        )
        producer.poll(0)
    producer.flush(10)


def _prompt_delivery(base: Settings, tokens: Path, rate: int, seconds: float) -> dict[str, Any]:
    """Calls at ``rate`` customer turns/s; SSE and plain-consumer arrival of each prompt."""
    settings = _settings_for(base, "api-prompts")
    ensure_topics(settings)
    env = _env(settings, tokens)
    worker = _start(["worker"], env)
    port = free_port()
    serve = _start(["serve", "--port", str(port)], env)
    watcher = PromptIdWatcher(settings)
    streams = [SseWatcher(port, f"agent-{n}") for n in range(10)]  # the calls' agents
    try:
        asyncio.run(_wait_ready(port))
        asyncio.run(_wait_ready(settings.http_port, timeout=180))  # the worker's models
        for stream in streams:
            stream.start()
            stream.open.wait(10)
        watcher.start()
        _send_turns(settings, rate, seconds)
        deadline = time.monotonic() + 30  # the last turns' prompts, on both paths
        while time.monotonic() < deadline and (
            len(watcher.stamps) < rate * seconds
            or sum(len(s.arrived) for s in streams) < len(watcher.stamps)
        ):
            time.sleep(0.2)
    finally:
        watcher.stopping.set()
        watcher.join(5)
        stop_process(serve)
        stop_process(worker)
    arrived = {pid: t for stream in streams for pid, t in stream.arrived.items()}
    sse = [arrived[pid] - stamp for pid, (stamp, _) in watcher.stamps.items() if pid in arrived]
    plain = [seen - stamp for stamp, seen in watcher.stamps.values()]
    return {
        "prompts": len(watcher.stamps),
        "delivered_over_sse": len(sse),
        "sse_p50_ms": round(_percentile(sse, 0.5) * 1000, 1),
        "sse_p99_ms": round(_percentile(sse, 0.99) * 1000, 1),
        "consumer_p99_ms": round(_percentile(plain, 0.99) * 1000, 1),
    }


async def _lookups(port: int, ids: list[str], rate: int, seconds: float) -> dict[str, Any]:
    await _wait_ready(port)
    await _load(port, [f"/v1/profiles/{c}" for c in ids[:50]], 100, 2.0)  # warm up
    profiles = await _load(port, [f"/v1/profiles/{c}" for c in ids], rate, seconds)
    floor = await _load(port, ["/livez"], rate, seconds)
    return {"profiles": profiles, "livez": floor}


def _build_profiles(settings: Settings, tokens: Path, customers: int) -> list[str]:
    """A worker applies ``customers`` × 5 channel events; the live customer ids."""
    events = bench_events(customers * 5, customers)
    customers = len({e.key for e in events})  # the ones drawn at least once
    _fill(settings, settings.topic("channel-events"), events)
    worker = _start(["worker"], _env(settings, tokens))
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            ids = asyncio.run(_ids(settings))
            if len(ids) >= customers:
                return ids
            time.sleep(1)
        raise RuntimeError("the worker did not build the profiles")
    finally:
        stop_process(worker)


async def _ids(settings: Settings) -> list[str]:
    store = store_for(settings)
    try:
        return await customer_ids(store)
    finally:
        await store.close()


def run_api_bench(base: Settings, customers: int, rate: int, seconds: float, as_json: bool) -> int:
    """Look-ups at ``rate``/s for ``seconds`` and prompt delivery; exit 1 on any error or
    undelivered prompt."""
    base = on_free_ports(base)
    stack = LocalStack(base)
    with tempfile.TemporaryDirectory() as directory:
        tokens = _tokens_file(Path(directory))
        try:
            stack.up()
            settings = _settings_for(base, "api")
            ensure_topics(settings)
            ids = _build_profiles(settings, tokens, customers)
            port = free_port()
            serve = _start(["serve", "--port", str(port)], _env(settings, tokens))
            try:
                lookups = asyncio.run(_lookups(port, ids, rate, seconds))
            finally:
                stop_process(serve)
            prompts = _prompt_delivery(base, tokens, 20, seconds)
        finally:
            stack.down()
    summary = {"customers": len(ids), "target_rate": rate, **lookups, "prompts": prompts}
    summary["p99_vs_livez"] = round(
        lookups["profiles"]["p99_ms"] / max(lookups["livez"]["p99_ms"], 0.01), 2
    )
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        _print(summary)
    ok = lookups["profiles"]["errors"] == 0 and prompts["delivered_over_sse"] == prompts["prompts"]
    return 0 if ok else 1


def _print(summary: dict[str, Any]) -> None:
    profiles, livez, prompts = summary["profiles"], summary["livez"], summary["prompts"]
    print(f"portrait bench --api: {summary['customers']} profiles, portrait serve")
    for name, row in (("GET /v1/profiles/{id}", profiles), ("GET /livez (floor)", livez)):
        print(
            f"  {name:22} {row['rate']:7.1f} req/s  p50 {row['p50_ms']:6.2f} ms  "
            f"p99 {row['p99_ms']:6.2f} ms  max {row['max_ms']:7.2f} ms  errors {row['errors']}"
        )
    print(f"  profile p99 ÷ floor p99: {summary['p99_vs_livez']}×")
    print(
        f"  prompts over SSE: {prompts['delivered_over_sse']}/{prompts['prompts']}  "
        f"p50 {prompts['sse_p50_ms']} ms  p99 {prompts['sse_p99_ms']} ms after produce "
        f"(a plain consumer: p99 {prompts['consumer_p99_ms']} ms)"
    )
