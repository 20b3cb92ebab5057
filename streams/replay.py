"""The confluent-kafka batch engine: replay input topics into a fresh Redis namespace.

For data teams rebuilding or backfilling profiles. A plain consumer (its own group id,
nothing committed) reads the four input topics from the beginning or from a time, and
hands batches to the same :class:`streams.pipeline.BatchPipeline` the Faust worker uses —
same processors, same Lua — in state-only mode: nothing is produced, so subscribers of
the live topics see nothing. It stops when the topics stay idle for ``idle_seconds``
(the high-water marks of some brokers cannot be trusted).

:func:`verify` compares every rebuilt profile with the live one of the same customer id.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from models.customer_model import default_customer_model
from portrait.config import Settings
from portrait.lookup import profile_by_id
from portrait.state.store import RedisProfileStore
from streams.kafka import INPUT_TOPICS, client_config
from streams.pipeline import BatchPipeline, InputRecord, OutputRecord

Progress = Callable[[int, float], None]


@dataclass(slots=True)
class ReplaySummary:
    """What a replay did."""

    events: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    customers: int = 0

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def _assignment(
    consumer: Consumer, settings: Settings, since_ms: int | None
) -> list[TopicPartition]:
    """Every partition of the input topics, at the beginning or at ``since_ms``."""
    partitions = []
    for short in INPUT_TOPICS:
        topic = settings.topic(short)
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            continue
        for number in metadata.partitions:
            start = since_ms if since_ms is not None else OFFSET_BEGINNING
            partitions.append(TopicPartition(topic, number, start))
    if since_ms is not None and partitions:
        partitions = consumer.offsets_for_times(partitions, timeout=10)
    return partitions


async def replay(
    source: Settings,
    target: Settings,
    *,
    since_ms: int | None = None,
    idle_seconds: float = 3.0,
    progress: Progress | None = None,
) -> ReplaySummary:
    """Rebuild profiles from ``source``'s input topics into ``target``'s Redis namespace."""
    consumer = Consumer(
        client_config(source)
        | {
            "group.id": f"portrait-replay-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,
        }
    )
    store = RedisProfileStore.for_settings(target)
    pipeline = BatchPipeline(target, store, emit=False)
    summary = ReplaySummary()
    loop = asyncio.get_running_loop()

    async def discard(_outputs: Sequence[OutputRecord]) -> None:
        """Replay never produces: rejected input is counted (``dlq``), not re-sent."""

    try:
        consumer.assign(_assignment(consumer, source, since_ms))
        started = first = time.monotonic()
        idle_since = started
        while True:
            batch = await loop.run_in_executor(None, consumer.consume, source.batch_max_events, 0.2)
            records = [
                InputRecord(
                    m.topic() or "", m.partition() or 0, m.offset() or 0, m.key(), m.value()
                )
                for m in batch
                if m.error() is None
            ]
            now = time.monotonic()
            if not records:
                if now - idle_since > idle_seconds:
                    break
                continue
            if summary.events == 0:
                first = now
            idle_since = now
            outcome = await pipeline.run(records, discard)
            for (_, kind), count in outcome.outcomes.items():
                summary.outcomes[kind] += count
            summary.events += len(records)
            summary.seconds = time.monotonic() - first
            if progress is not None:
                progress(summary.events, summary.seconds)
        summary.customers = len(await customer_ids(store))
    finally:
        consumer.close()
        await store.close()
    return summary


async def customer_ids(store: RedisProfileStore) -> list[str]:
    """Ids of the live customers in a store's namespace."""
    pattern = f"{store.prefix}c:{{*}}:p"
    found = []
    async for key in store.redis.scan_iter(match=pattern, count=1000):
        text = key.decode("utf-8")
        found.append(text[len(store.prefix) + 3 : text.rindex("}")])
    return sorted(found)


def differences(live: Any, rebuilt: Any, path: str = "") -> list[str]:
    """Paths where two documents differ (values are not included: they may be personal)."""
    if isinstance(live, dict) and isinstance(rebuilt, dict):
        out = []
        for key in sorted(set(live) | set(rebuilt)):
            out.extend(differences(live.get(key), rebuilt.get(key), f"{path}.{key}".lstrip(".")))
        return out
    if isinstance(live, list) and isinstance(rebuilt, list) and len(live) == len(rebuilt):
        out = []
        for i, (a, b) in enumerate(zip(live, rebuilt, strict=True)):
            out.extend(differences(a, b, f"{path}[{i}]"))
        return out
    if isinstance(live, float) and isinstance(rebuilt, float):
        return [] if abs(live - rebuilt) <= 1e-6 * max(1.0, abs(live)) else [path]
    return [] if live == rebuilt else [path]


async def verify(live: Settings, rebuilt: Settings) -> dict[str, list[str]]:
    """customer id → differing document paths, for every customer that differs.

    Customers only in one namespace are reported with the path ``(missing live)`` or
    ``(missing rebuilt)``.
    """
    live_store = RedisProfileStore.for_settings(live)
    rebuilt_store = RedisProfileStore.for_settings(rebuilt)
    model = default_customer_model()
    report: dict[str, list[str]] = {}
    try:
        rebuilt_ids = await customer_ids(rebuilt_store)
        for cid in rebuilt_ids:
            theirs = await profile_by_id(rebuilt_store, cid, model, rebuilt.document())
            ours = await profile_by_id(live_store, cid, model, live.document())
            if ours is None:
                report[cid] = ["(missing live)"]
            elif theirs is not None and (paths := differences(ours, theirs)):
                report[cid] = paths
        for cid in set(await customer_ids(live_store)) - set(rebuilt_ids):
            report[cid] = ["(missing rebuilt)"]
    finally:
        await live_store.close()
        await rebuilt_store.close()
    return report
