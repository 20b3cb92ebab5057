"""``portrait bench --prompts``: call segment produced → agent prompt consumed, at a fixed rate.

Calls run concurrently on the embedded stack against one worker process. Each call starts
with ``call.started``; its customer turns alternate between a pleased and an upset
sentence (Chinese and English calls), so every turn changes the call's advice and yields
one prompt. A paced producer sends ``rate`` segments per second; a consumer on
``portrait.agent-prompts`` records when each prompt arrives. Latency is arrival time minus
the time the segment was handed to the producer, both on this machine's clock; the
worker's own ``latency_ms`` (Kafka timestamp → prompt built) is reported beside it, so
the difference is delivery to and from the broker.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from cli.bench import _settings_for, bench_events
from cli.stack import LocalStack, on_free_ports, stop_process
from portrait.config import Settings
from streams.kafka import (
    client_config,
    consume_ready,
    ensure_topics,
    make_producer,
    produce_confirmed,
)
from streams.records import OutputRecord

PLEASED = ("太好了，非常满意，谢谢你们", "Great, that sounds perfect, thank you so much")
UPSET = ("你们太差劲了，我要投诉", "This is the worst service ever, I want to complain")


def _call_event(call: int, suffix: str, type_: str, payload: dict[str, Any]) -> dict[str, Any]:
    """An event of call number ``call`` (its customer's phone derives from the number)."""
    return {
        "event_id": f"lat-{call:04d}-{suffix}",
        "type": type_,
        "occurred_at": "2026-11-20T10:00:00+08:00",
        "source": "hotline",
        "customer": {"phone": f"1390000{call:04d}"},
        "payload": {"call_id": f"lat-call-{call:04d}", **payload},
    }


def _segment(call: int, seq: int, offset_ms: int) -> dict[str, Any]:
    """A customer turn: pleased on odd turns, upset on even ones; odd calls in English."""
    text = (PLEASED if seq % 2 else UPSET)[call % 2]
    payload = {"seq": seq, "speaker": "customer", "text": text, "offset_ms": offset_ms}
    return _call_event(call, f"{seq:06d}", "call.segment", payload)


def _started(call: int) -> dict[str, Any]:
    return _call_event(call, "start", "call.started", {"agent_id": f"agent-{call % 10}"})


class PromptWatcher(threading.Thread):
    """Consumes the prompt topic and records each prompt's arrival time."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.topic = settings.topic("agent-prompts")
        self.consumer = Consumer(
            client_config(settings)
            | {
                "group.id": "bench-latency",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,  # a latency-minded subscriber's setting
            }
        )
        partitions = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        self.consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions.partitions]
        )
        self.arrived: dict[str, tuple[float, float, float]] = {}
        """source event id → (arrival here, the worker's latency_ms, Kafka timestamp s)."""
        self.stopping = threading.Event()

    def record(self, body: dict[str, Any], now: float, stamp: float) -> None:
        """Note one prompt: its body, when it arrived here and its Kafka timestamp (s)."""
        self.arrived[body["source_event_id"]] = (now, body["latency_ms"], stamp)

    def run(self) -> None:
        while not self.stopping.is_set():
            for message in consume_ready(self.consumer, 500, 0.05):
                if message.error() is None:
                    now = time.time()
                    body = orjson.loads(message.value() or b"{}")
                    self.record(body, now, message.timestamp()[1] / 1000)
        self.consumer.close()


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(share * len(ordered)), len(ordered) - 1)] if ordered else 0.0


CALLS = 40


def _warm_up(producer: Any, topic: str, watcher: PromptWatcher) -> bool:
    """Start every call and send one turn each, until the worker answers all of them."""
    for call in range(CALLS):
        producer.produce(topic, orjson.dumps(_started(call)), f"lat-call-{call:04d}")
    for call in range(CALLS):
        producer.produce(topic, orjson.dumps(_segment(call, 0, 0)), f"lat-call-{call:04d}")
    producer.flush(10)
    deadline = time.monotonic() + 120
    while len(watcher.arrived) < CALLS and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(watcher.arrived) >= CALLS


def _send_paced(
    producer: Any, topic: str, rate: int, seconds: float
) -> tuple[dict[str, float], float]:
    """``rate`` customer turns a second for ``seconds``, round-robin over the calls: when
    each was handed to the producer, and how long sending took."""
    sent: dict[str, float] = {}
    interval = 1.0 / rate
    started = time.perf_counter()
    for i in range(int(rate * seconds)):
        target = started + i * interval
        if (pause := target - time.perf_counter()) > 0:
            time.sleep(pause)  # not a polling loop: the bench must not take the worker's CPU
        call, seq = i % CALLS, 1 + i // CALLS
        body = _segment(call, seq, seq * 5_000)
        sent[body["event_id"]] = time.time()
        producer.produce(topic, orjson.dumps(body), f"lat-call-{call:04d}")
        producer.poll(0)
    producer.flush(10)
    return sent, time.perf_counter() - started


def _worker(settings: Settings) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "cli", "worker"],
        env=dict(os.environ) | settings.as_env() | {"PORTRAIT_LOG_LEVEL": "WARNING"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def run_latency_bench(
    base: Settings, rate: int, seconds: float, as_json: bool, backlog: int = 0
) -> int:
    """Produce ``rate`` customer segments/s for ``seconds``; print p50/p99 latency. With
    ``backlog``: first that many channel events at once, and the backlog's drain rate
    measured twice, with the segments and in a run without them."""
    base = on_free_ports(base)
    stack = LocalStack(base)
    try:
        stack.up()
        summary = _run(base, "latency", rate, seconds, backlog)
        if backlog:
            alone = _run(base, "drain", 0, seconds, backlog)
            summary["drain_events_per_second_alone"] = alone["drain_events_per_second"]
            summary["drain_ratio"] = round(
                summary["drain_events_per_second"] / alone["drain_events_per_second"], 3
            )
    finally:
        stack.down()
    _print(summary, as_json)
    return 0 if summary["lossless"] else 1


def _run(base: Settings, name: str, rate: int, seconds: float, backlog: int) -> dict[str, Any]:
    """One worker on fresh topics, as ``portrait worker`` runs by default (the profiles
    publisher beside it, competing for the same cores): warm-up, the backlog (if any),
    then the paced turns."""
    settings = _settings_for(base, name).model_copy(update={"profiles_topic": True})
    ensure_topics(settings)
    worker = _worker(settings)
    watcher = PromptWatcher(settings)
    watcher.start()
    producer = make_producer(settings, **{"linger.ms": 0})
    topic = settings.topic("calls")
    sent: dict[str, float] = {}
    send_seconds = 0.0
    try:
        if not _warm_up(producer, topic, watcher):
            raise RuntimeError("the worker did not answer the warm-up turns")
        if backlog:
            bulk = make_producer(settings, **{"linger.ms": 20})
            produce_confirmed(
                bulk,
                [
                    OutputRecord(settings.topic("channel-events"), e.key, e.value)
                    for e in bench_events(backlog, max(backlog // 10, 1))
                ],
            )
        if rate:
            sent, send_seconds = _send_paced(producer, topic, rate, seconds)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(k in watcher.arrived for k in sent):
            time.sleep(0.1)
        drain = _drain_rate(settings, backlog) if backlog else 0.0
    finally:
        watcher.stopping.set()
        watcher.join(5)
        stop_process(worker)
    summary: dict[str, Any] = _summary(watcher, sent, send_seconds) if rate else {"lossless": True}
    summary["backlog"] = backlog
    summary["drain_events_per_second"] = round(drain, 1)
    return summary


def _drain_rate(settings: Settings, backlog: int, timeout: float = 600.0) -> float:
    """Backlog events per second, from the Kafka timestamps of their first and last
    ``profile.changed`` (waits until every one of them is out)."""
    topic = settings.topic("profile-changes")
    consumer = Consumer(
        client_config(settings) | {"group.id": "bench-drain", "enable.auto.commit": False}
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    stamps: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(stamps) < backlog and time.monotonic() < deadline:
            for message in consumer.consume(5000, 0.2):
                if message.error() is None:
                    body = orjson.loads(message.value() or b"{}")
                    source = body.get("source_event_id", "")
                    if body.get("type") == "profile.changed" and source.startswith("b-"):
                        stamps[source] = message.timestamp()[1] / 1000
    finally:
        consumer.close()
    if len(stamps) < 2:
        return 0.0
    return len(stamps) / (max(stamps.values()) - min(stamps.values()))


def _summary(watcher: PromptWatcher, sent: dict[str, float], send_seconds: float) -> dict[str, Any]:
    latencies = [
        1000 * (watcher.arrived[k][0] - t) for k, t in sent.items() if k in watcher.arrived
    ]
    stamped = [1000 * (watcher.arrived[k][2] - t) for k, t in sent.items() if k in watcher.arrived]
    internal = [watcher.arrived[k][1] for k in sent if k in watcher.arrived]
    return {
        "segments": len(sent),
        "segments_per_second": round(len(sent) / send_seconds, 1),
        "prompts": len(latencies),
        "p50_ms": round(_percentile(latencies, 0.50), 1),
        "p99_ms": round(_percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies, default=0.0), 1),
        "mean_ms": round(statistics.fmean(latencies), 1) if latencies else 0.0,
        "worker_latency_ms_p50": round(_percentile(internal, 0.50), 1),
        "worker_latency_ms_p99": round(_percentile(internal, 0.99), 1),
        "kafka_timestamps_p50_ms": round(_percentile(stamped, 0.50), 1),
        "kafka_timestamps_p99_ms": round(_percentile(stamped, 0.99), 1),
        "lossless": len(latencies) == len(sent),
    }


def _print(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
        return
    if summary["backlog"]:
        print(
            f"behind a backlog of {summary['backlog']} channel events produced at once: "
            f"drained at {summary['drain_events_per_second']:.0f}/s with the segments, "
            f"{summary['drain_events_per_second_alone']:.0f}/s without "
            f"({summary['drain_ratio']}x)"
        )
    print(
        f"{summary['segments']} customer call segments at {summary['segments_per_second']}/s, "
        f"{CALLS} concurrent calls, one default worker (the profiles publisher beside it)"
    )
    print(
        f"  produced → prompt consumed  p50 {summary['p50_ms']} ms  "
        f"p99 {summary['p99_ms']} ms  max {summary['max_ms']} ms"
    )
    print(
        f"  inside the worker (Kafka timestamp → prompt built)  "
        f"p50 {summary['worker_latency_ms_p50']} ms  p99 {summary['worker_latency_ms_p99']} ms"
    )
    print(
        f"  segment produced → prompt Kafka timestamp  p50 {summary['kafka_timestamps_p50_ms']} "
        f"ms  p99 {summary['kafka_timestamps_p99_ms']} ms"
    )
    print(f"  every segment prompted: {summary['lossless']}")
