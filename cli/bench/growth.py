"""``portrait bench --growth``: does an event cost more for a customer with a long history?

One ``portrait worker`` on the embedded stack. The same count of inbound chat messages,
and of channel events, goes once to as many fresh customers and once to a few customers
that already have ``history`` events each (sent first, not measured). For each run it
prints events/s (first to last ``profile.changed``), the state scripts' Redis time per
event (``INFO commandstats``: EVALSHA and FCALL microseconds before and after, both scripts), and
``MEMORY USAGE`` of one customer's keys; then mature ÷ fresh ratios. It runs ``rounds``
rounds on new customers each, the order of fresh and mature alternating, and prints the
medians with each round's ratios: single runs of one build differ by up to 0.5× on a
busy 2-core machine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from importlib.resources import files
from statistics import median
from typing import Any

import orjson
import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from cli.bench import ACTIONS, SOURCES, _settings_for, script_usec
from cli.stack import LocalStack, on_free_ports, stop_process
from portrait.config import Settings
from processors.identity import customer_id_for
from streams.kafka import client_config, ensure_topics, make_producer

BASE_SECONDS = 1_793_500_000  # 2026-11-01


@dataclass(frozen=True, slots=True)
class GrowthRun:
    """One measured workload."""

    name: str
    events: int
    seconds: float
    script_usec: float
    customer_bytes: int

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0

    @property
    def usec_per_event(self) -> float:
        """Redis script microseconds per event."""
        return self.script_usec / self.events if self.events else 0.0


def _texts() -> list[str]:
    """Customer-service messages (the emotion training set's texts, zh and en)."""
    raw = files("models").joinpath("data/emotion_cs.jsonl").read_text(encoding="utf-8")
    return [orjson.loads(line)["text"] for line in raw.splitlines() if line.strip()]


def _moment(i: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S+08:00", time.gmtime(BASE_SECONDS + 37 * i))


def chat_events(tag: str, count: int, customers: list[str], texts: list[str]) -> list[Any]:
    """``count`` inbound chats spread over ``customers`` (im ids), in time order."""
    out = []
    for i in range(count):
        im_id = customers[i % len(customers)]
        body = {
            "event_id": f"{tag}-{i:06d}",
            "type": "chat.message",
            "occurred_at": _moment(i),
            "source": "wecom",
            "customer": {"im_id": im_id},
            "payload": {
                "conversation_id": f"conv-{im_id}",
                "direction": "inbound",
                "employee_id": f"emp-{i % 3}",
                "text": texts[(i * 7919) % len(texts)],
            },
        }
        out.append(("chat", im_id, body))
    return out


PRODUCTS = ("solar", "smart_meter", "ev_charger", "autopay", "green_tariff", "insurance")


def channel_events(tag: str, count: int, customers: list[str], texts: list[str]) -> list[Any]:
    """``count`` channel events spread over ``customers`` (account numbers): actions with
    amounts and attributes, purchases with items, every fourth with a review text."""
    out = []
    for i in range(count):
        account = customers[i % len(customers)]
        action = ACTIONS[(i * 5) % len(ACTIONS)]
        payload: dict[str, Any] = {
            "action": action,
            "amount": round(1 + (i * 37) % 500, 2),
            "attributes": {"city": ("上海", "北京", "London")[i % 3]},
        }
        if action in ("purchase", "business_handled"):
            payload["items"] = [PRODUCTS[i % len(PRODUCTS)]]
        if i % 4 == 0:
            payload["text"] = texts[(i * 7919) % len(texts)]
        body = {
            "event_id": f"{tag}-{i:06d}",
            "type": "channel.event",
            "occurred_at": _moment(i),
            "source": SOURCES[i % len(SOURCES)],
            "customer": {"customer_id": account},
            "payload": payload,
        }
        out.append(("channel-events", account, body))
    return out


class OutputCounter:
    """Reads ``portrait.profile-changes`` and times the outputs of each event-id tag."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic("profile-changes")
        self.consumer = Consumer(
            client_config(settings) | {"group.id": "bench-growth", "enable.auto.commit": False}
        )
        partitions = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        self.consumer.assign(
            [TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions.partitions]
        )
        self.seen: dict[str, set[str]] = {}
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}

    def wait(self, tag: str, expect: int, timeout: float = 600.0) -> float:
        """Seconds between the first and last output of ``tag``'s events."""
        deadline = time.monotonic() + timeout
        while len(self.seen.get(tag, ())) < expect:
            if time.monotonic() > deadline:
                got = len(self.seen.get(tag, ()))
                raise TimeoutError(f"{tag}: {got} of {expect} events answered")
            for message in self.consumer.consume(5000, 0.2):
                if message.error() is not None:
                    continue
                now = time.monotonic()
                body = orjson.loads(message.value() or b"{}")
                if body.get("type") != "profile.changed":
                    continue
                source = body["source_event_id"]
                key = source.rsplit("-", 1)[0]
                self.seen.setdefault(key, set()).add(source)
                self.first.setdefault(key, now)
                self.last[key] = now
        return self.last[tag] - self.first[tag]

    def close(self) -> None:
        """Leave the topic."""
        self.consumer.close()


def _customer_bytes(client: redis.Redis, prefix: str, customer_id: str) -> int:
    total = 0
    for key in client.scan_iter(f"{prefix}c:{{{customer_id}}}:*", count=1000):
        total += int(client.memory_usage(key, samples=0) or 0)
    return total


def _send(settings: Settings, events: list[Any]) -> None:
    producer = make_producer(settings, **{"linger.ms": 5})
    for topic, key, body in events:
        producer.produce(settings.topic(topic), orjson.dumps(body), key)
        producer.poll(0)
    producer.flush(30)


def _measure(
    settings: Settings,
    client: redis.Redis,
    counter: OutputCounter,
    name: str,
    events: list[Any],
    history: list[Any] | None,
) -> GrowthRun:
    """Send one workload (after its history, if any), wait for all of its outputs, and
    take its figures. Memory is of the first customer: after its history for a mature
    one, after its one event for a fresh one."""
    kind = "im_id" if events[0][0] == "chat" else "customer_id"
    sample = customer_id_for(f"{kind}:{events[0][1]}")
    size = 0
    if history:
        _send(settings, history)
        counter.wait(history[0][2]["event_id"].rsplit("-", 1)[0], len(history))
        time.sleep(1.0)  # the history's confirmations
        size = _customer_bytes(client, settings.redis_key_prefix, sample)
    time.sleep(1.0)  # let the previous workload's confirmations finish
    before = script_usec(client)
    _send(settings, events)
    seconds = counter.wait(name, len(events))
    time.sleep(1.0)
    usec = script_usec(client) - before
    if not history:
        size = _customer_bytes(client, settings.redis_key_prefix, sample)
    return GrowthRun(name, len(events), seconds, usec, size)


def _round(
    settings: Settings,
    client: redis.Redis,
    counter: OutputCounter,
    texts: list[str],
    n: int,
    sizes: tuple[int, int, int],
) -> dict[str, GrowthRun]:
    """One round: each kind's fresh and mature runs, on customers of this round only, in
    the order of the round (even: fresh first, odd: mature first)."""
    chats, channel, history = sizes
    runs: dict[str, GrowthRun] = {}
    for kind, count, make, name in (
        ("chat", chats, chat_events, "im"),
        ("channel", channel, channel_events, "ACC"),
    ):
        mature = [f"{name}-old-{n}-{i}" for i in range(max(1, count // history))]
        fresh = [f"{name}-new-{n}-{i}" for i in range(count)]
        plan = [
            (f"{kind}-fresh", make(f"r{n}-{kind}-fresh", count, fresh, texts), None),
            (
                f"{kind}-mature",
                make(f"r{n}-{kind}-mature", count, mature, texts),
                make(f"r{n}-{kind}-past", history * len(mature), mature, texts),
            ),
        ]
        for run, events, past in plan[:: 1 if n % 2 == 0 else -1]:
            measured = _measure(settings, client, counter, f"r{n}-{run}", events, past)
            runs[run] = replace(measured, name=run)
    return runs


def run_growth_bench(
    base: Settings, chats: int, channel: int, history: int, as_json: bool, rounds: int = 3
) -> dict[str, Any]:
    """Fresh against mature customers, chat and channel events, in ``rounds`` rounds (the
    order of fresh and mature alternating, so drift of this machine's speed falls on
    both); print and return the medians with every round's ratios."""
    base = on_free_ports(base)
    stack = LocalStack(base)
    texts = _texts()
    summaries: list[dict[str, Any]] = []
    try:
        stack.up()
        settings = _settings_for(base, "growth")
        ensure_topics(settings)
        client = redis.Redis.from_url(settings.redis_url)
        worker = subprocess.Popen(
            [sys.executable, "-m", "cli", "worker"],
            env=dict(os.environ) | settings.as_env() | {"PORTRAIT_LOG_LEVEL": "WARNING"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        counter = OutputCounter(settings)
        try:
            warm = chat_events("warm", 50, [f"warm-{i}" for i in range(50)], texts)
            _send(settings, warm)
            counter.wait("warm", len(warm))
            for n in range(max(1, rounds)):
                runs = _round(settings, client, counter, texts, n, (chats, channel, history))
                summaries.append(_summary(runs, history))
        finally:
            counter.close()
            stop_process(worker)
    finally:
        stack.down()
    summary = _medians(summaries)
    _print(summary, as_json)
    return summary


def _summary(runs: dict[str, GrowthRun], history: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "history": history,
        "runs": {
            r.name: {
                "events": r.events,
                "events_per_second": round(r.rate, 1),
                "script_usec_per_event": round(r.usec_per_event, 1),
                "customer_bytes": r.customer_bytes,
            }
            for r in runs.values()
        },
    }
    for kind in ("chat", "channel"):
        fresh, mature = runs[f"{kind}-fresh"], runs[f"{kind}-mature"]
        out[f"{kind}_script_ratio"] = round(mature.usec_per_event / fresh.usec_per_event, 2)
        out[f"{kind}_rate_ratio"] = round(mature.rate / fresh.rate, 2)
    out["mature_chat_customer_bytes"] = runs["chat-mature"].customer_bytes
    return out


RATIOS = ("chat_script_ratio", "chat_rate_ratio", "channel_script_ratio", "channel_rate_ratio")


def _medians(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Every figure's median over the rounds (each ratio the median of the rounds'
    ratios, not a ratio of medians), and each round's ratios."""
    first = summaries[0]
    out: dict[str, Any] = {
        "history": first["history"],
        "rounds": len(summaries),
        "runs": {
            name: {
                figure: median(s["runs"][name][figure] for s in summaries)
                for figure in first["runs"][name]
            }
            for name in first["runs"]
        },
    }
    for ratio in RATIOS:
        out[ratio] = median(s[ratio] for s in summaries)
    out["mature_chat_customer_bytes"] = median(s["mature_chat_customer_bytes"] for s in summaries)
    out["round_ratios"] = {ratio: [s[ratio] for s in summaries] for ratio in RATIOS}
    return out


def _print(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
        return
    print(
        f"one worker; mature customers have {summary['history']} events before the run "
        "(bytes: a customer after that history; fresh: after its one event); "
        f"medians of {summary['rounds']} rounds"
    )
    for name, run in summary["runs"].items():
        print(
            f"  {name:15} {run['events']:6d} events  {run['events_per_second']:8.0f} events/s  "
            f"{run['script_usec_per_event']:7.1f} µs script/event  "
            f"{run['customer_bytes']:7d} bytes/customer"
        )
    for kind in ("chat", "channel"):
        print(
            f"  {kind}: mature / fresh script time = {summary[f'{kind}_script_ratio']}x   "
            f"events/s = {summary[f'{kind}_rate_ratio']}x"
        )
    for ratio, values in summary["round_ratios"].items():
        print(f"  {ratio} by round: {', '.join(f'{v}x' for v in values)}")
    print(
        f"  a customer with {summary['history']} chats holds "
        f"{summary['mature_chat_customer_bytes']} bytes in Redis"
    )
