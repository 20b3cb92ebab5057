"""``portrait bench``: the same events through several consumers, events/s and ratios.

(a) ``naive``: a Faust agent awaiting one Redis call and one send per event;
(b) ``portrait``: the Portrait worker (batches, pipelined Lua, confirmed batch outputs),
    and ``portrait-x2``, two worker processes in one group;
(c) ``plain``: a confluent-kafka consume → produce loop, the broker's passthrough limit;
and ``faust-floor``: a Faust agent doing nothing but batch-in/batch-out, Faust's own cost.

Each runs on its own copy of the input topic. Throughput is measured from the outputs:
events / (last output − first output), so start-up and group joins are left out. The
outputs are checked for loss and duplicates by source event id.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from cli.stack import LocalStack, free_port, on_free_ports, stop_process
from portrait.config import Settings
from streams.kafka import client_config, ensure_topics, make_producer, produce_confirmed
from streams.records import OutputRecord

SCRIPT_COMMANDS = ("evalsha", "eval", "fcall")  # the state scripts, however Redis runs them


def script_usec(client: Any) -> float:
    """Microseconds a Redis has spent in scripts and functions (``INFO commandstats``)."""
    stats = client.info("commandstats")
    return sum(float(stats.get(f"cmdstat_{c}", {}).get("usec", 0)) for c in SCRIPT_COMMANDS)


SOURCES = ("app", "web", "wechat", "hotline", "online_service", "marketing")
ACTIONS = ("login", "page_view", "bill_paid", "business_handled", "purchase", "share")


@dataclass(frozen=True, slots=True)
class Measured:
    """One contender's figures."""

    name: str
    events: int
    seconds: float
    outputs: int
    unique: int

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def bench_events(count: int, customers: int, seed: int = 42) -> list[OutputRecord]:
    """``count`` channel events of about 300 bytes for ``customers`` customers."""
    rng = random.Random(seed)
    base = 1_793_500_000  # 2026-11-01
    out = []
    for i in range(count):
        account = f"ACC-{rng.randrange(customers):06d}"
        moment = time.strftime(
            "%Y-%m-%dT%H:%M:%S+08:00", time.gmtime(base + rng.randrange(86400 * 20))
        )
        body = {
            "event_id": f"b-{i:08d}",
            "type": "channel.event",
            "occurred_at": moment,
            "source": rng.choice(SOURCES),
            "customer": {"customer_id": account},
            "payload": {
                "action": rng.choice(ACTIONS),
                "amount": round(rng.uniform(1, 500), 2),
                "attributes": {
                    "city": rng.choice(["上海", "北京", "杭州", "London"]),
                    "segment": rng.choice(["retail", "sme"]),
                },
            },
        }
        out.append(OutputRecord("", account.encode(), orjson.dumps(body)))
    return out


def _fill(settings: Settings, topic: str, events: list[OutputRecord]) -> None:
    ensure_topics(settings)
    produce_confirmed(
        make_producer(settings, **{"linger.ms": 20}),
        [OutputRecord(topic, e.key, e.value) for e in events],
    )


def _watch(settings: Settings, topic: str, expect: int, timeout: float) -> tuple[float, int, int]:
    """Seconds between first and last output, outputs seen, distinct source events."""
    consumer = Consumer(
        client_config(settings) | {"group.id": "bench-watch", "enable.auto.commit": False}
    )
    metadata = consumer.list_topics(topic, timeout=10).topics[topic]
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
    first = last = 0.0
    seen: set[str] = set()
    outputs = 0
    deadline = time.monotonic() + timeout
    idle_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(5000, 0.2)
            now = time.monotonic()
            if not batch:
                if len(seen) >= expect and now - idle_since > 2.0:
                    break
                continue
            for message in batch:
                if message.error() is not None:
                    continue
                body = orjson.loads(message.value() or b"{}")
                if body.get("type", "profile.changed") != "profile.changed":
                    continue
                outputs += 1
                seen.add(body["source_event_id"])
            first = first or now
            last = now
            idle_since = now
    finally:
        consumer.close()
    return last - first, outputs, len(seen)


def _subprocess_contender(
    name: str,
    settings: Settings,
    command: list[str],
    out_topic: str,
    count: int,
    extra_env: dict[str, str],
) -> Measured:
    env = dict(os.environ) | settings.as_env() | extra_env
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        seconds, outputs, unique = _watch(settings, out_topic, count, timeout=600)
    finally:
        stop_process(process)
    return Measured(name, count, seconds, outputs, unique)


def _plain_loop(settings: Settings, in_topic: str, out_topic: str, count: int) -> Measured:
    consumer = Consumer(
        client_config(settings)
        | {"group.id": f"plain-{time.time_ns()}", "enable.auto.commit": False}
    )
    metadata = consumer.list_topics(in_topic, timeout=10).topics[in_topic]
    consumer.assign([TopicPartition(in_topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
    producer = make_producer(settings)
    done, seen = 0, set()
    first = 0.0
    deadline = time.monotonic() + 300
    while done < count and time.monotonic() < deadline:
        batch = [m for m in consumer.consume(1000, 0.5) if m.error() is None]
        if not batch:
            continue
        first = first or time.monotonic()
        records = []
        for message in batch:
            event = orjson.loads(message.value() or b"{}")
            seen.add(event["event_id"])
            records.append(
                OutputRecord(
                    out_topic, message.key(), orjson.dumps({"source_event_id": event["event_id"]})
                )
            )
        produce_confirmed(producer, records)
        consumer.commit(asynchronous=False)
        done += len(batch)
    seconds = time.monotonic() - first
    consumer.close()
    return Measured("plain", count, seconds, done, len(seen))


def _settings_for(base: Settings, name: str) -> Settings:
    """Fresh topics, keys and group for one contender. Workers run without the
    ``portrait.profiles`` publisher beside them (a process of its own, measured apart):
    the benchmarks measure the worker's pipeline."""
    run = f"{name}-{time.time_ns() % 10**9}"
    return base.model_copy(
        update={
            "profiles_topic": False,
            "topic_prefix": f"bench-{run}.",
            "redis_key_prefix": f"bench-{run}:",
            "consumer_group": f"bench-{run}",
            "http_port": free_port(),
        }
    )


def run_bench(base: Settings, events: int, customers: int, as_json: bool) -> int:
    """Run all three contenders on the local stack and print events/s and ratios."""
    base = on_free_ports(base)
    stack = LocalStack(base)
    payload = bench_events(events, customers)
    results: list[Measured] = []
    try:
        stack.up()
        python = sys.executable
        contenders: list[tuple[str, list[str], dict[str, str]]] = [
            ("naive", [python, "-m", "cli.bench.apps", "naive"], {}),
            ("faust-floor", [python, "-m", "cli.bench.apps", "floor"], {}),
            ("portrait", [python, "-m", "cli", "worker"], {}),
            ("portrait-x2", [python, "-m", "cli", "worker", "--processes", "2"], {}),
        ]
        for name, command, env in contenders:
            settings = _settings_for(base, name)
            _fill(settings, settings.topic("channel-events"), payload)
            env = env | {
                "BENCH_IN": settings.topic("channel-events"),
                "BENCH_OUT": settings.topic("profile-changes"),
                "PORTRAIT_LOG_LEVEL": "WARNING",
            }
            results.append(
                _subprocess_contender(
                    name, settings, command, settings.topic("profile-changes"), events, env
                )
            )
        plain = _settings_for(base, "plain")
        _fill(plain, plain.topic("channel-events"), payload)
        results.append(
            _plain_loop(
                plain, plain.topic("channel-events"), plain.topic("profile-changes"), events
            )
        )
    finally:
        stack.down()
    summary = _summary(results, events, customers)
    _print(summary, results, as_json)
    return 0 if summary["lossless"] else 1


def _summary(results: list[Measured], events: int, customers: int) -> dict[str, Any]:
    by_name = {r.name: r for r in results}
    summary = {
        "events": events,
        "customers": customers,
        "results": {
            r.name: {
                "events_per_second": round(r.rate, 1),
                "seconds": round(r.seconds, 3),
                "outputs": r.outputs,
                "unique_outputs": r.unique,
            }
            for r in results
        },
        "portrait_vs_naive": round(by_name["portrait"].rate / by_name["naive"].rate, 2),
        "portrait_vs_plain": round(by_name["portrait"].rate / by_name["plain"].rate, 3),
        "portrait_vs_faust_floor": round(by_name["portrait"].rate / by_name["faust-floor"].rate, 2),
        "portrait_x2_vs_naive": round(by_name["portrait-x2"].rate / by_name["naive"].rate, 2),
        "lossless": all(r.unique == events for r in results),
        "no_duplicates": all(
            by_name[name].outputs == events for name in ("portrait", "portrait-x2")
        ),
    }
    return summary


def _print(summary: dict[str, Any], results: list[Measured], as_json: bool) -> None:
    events, customers = summary["events"], summary["customers"]
    if as_json:
        print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    else:
        print(f"{events} channel events, {customers} customers, 4 partitions, one process each")
        for r in results:
            print(
                f"  {r.name:9} {r.rate:10.0f} events/s  ({r.seconds:.2f} s, "
                f"{r.outputs} outputs, {r.unique} distinct)"
            )
        print(
            f"  portrait / naive = {summary['portrait_vs_naive']}x   "
            f"portrait / plain = {summary['portrait_vs_plain']}x   "
            f"portrait / faust-floor = {summary['portrait_vs_faust_floor']}x   "
            f"portrait-x2 / naive = {summary['portrait_x2_vs_naive']}x"
        )
        print(
            f"  nothing lost: {summary['lossless']}   "
            f"no duplicate outputs: {summary['no_duplicates']}"
        )
