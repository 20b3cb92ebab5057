"""The confluent-kafka batch engine: replay input topics into a fresh Redis namespace.

For data teams rebuilding or backfilling profiles. A plain consumer (its own group id,
nothing committed) reads the four input topics from the beginning or from a time, and
hands batches to the same :class:`streams.pipeline.BatchPipeline` the Faust worker uses —
same processors, same Lua — in state-only mode: nothing is produced, so subscribers of
the live topics see nothing. It stops when the topics stay idle for ``idle_seconds``
(the high-water marks of some brokers cannot be trusted). The next batch is fetched
while the current one is applied.

:func:`replay_parallel` runs several such engines in processes, each on its share of
the partitions: the profile state is order-independent (merges and deltas commute), so
splitting the topics any way gives the same profiles.

:func:`verify` compares every rebuilt profile with the live one of the same customer id.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import queue
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from models.customer_model import default_customer_model
from portrait.config import Settings
from processors.document import document_settings
from processors.layout import ACCOUNT_ENTITY, PROFILE_KEY, entity_key
from state.store import RedisProfileStore
from state.stores import store_for
from streams.kafka import INPUT_TOPICS, client_config
from streams.lookup import get_account, profile_by_id
from streams.pipeline import BatchPipeline
from streams.records import InputRecord, OutputRecord

Progress = Callable[[int, float], None]

log = logging.getLogger("portrait.replay")

_EXIT_GRACE_SECONDS = 30.0
"""How long an engine that sent its summary may take to exit before it is ended."""


@dataclass(slots=True)
class ReplaySummary:
    """What a replay did."""

    events: int = 0
    seconds: float = 0.0
    outcomes: Counter[str] = field(default_factory=Counter)
    customers: int = 0
    started: float = 0.0  # time.monotonic() of the first event applied
    finished: float = 0.0  # … and of the last

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


def _assignment(
    consumer: Consumer, settings: Settings, since_ms: int | None, share: tuple[int, int]
) -> list[TopicPartition]:
    """This engine's partitions of the input topics (``share`` = (index, engines): every
    engines-th of the sorted list), at the beginning or at ``since_ms``."""
    everything: list[tuple[str, int]] = []
    for short in INPUT_TOPICS:
        topic = settings.topic(short)
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            continue
        everything.extend((topic, number) for number in sorted(metadata.partitions))
    index, engines = share
    start = since_ms if since_ms is not None else OFFSET_BEGINNING
    partitions = [
        TopicPartition(topic, number, start)
        for position, (topic, number) in enumerate(everything)
        if position % engines == index
    ]
    if since_ms is not None and partitions:
        partitions = consumer.offsets_for_times(partitions, timeout=10)
    return partitions


def _consumer(source: Settings) -> Consumer:
    """A consumer of its own group (it commits nothing: a replay reads from positions)."""
    return Consumer(
        client_config(source)
        | {
            "group.id": f"portrait-replay-{time.time_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 50,
        }
    )


def _record(message: Any) -> InputRecord:
    return InputRecord(
        message.topic() or "",
        message.partition() or 0,
        message.offset() or 0,
        message.key(),
        message.value(),
    )


async def replay(
    source: Settings,
    target: Settings,
    *,
    since_ms: int | None = None,
    idle_seconds: float = 3.0,
    progress: Progress | None = None,
    share: tuple[int, int] = (0, 1),
    finished: Callable[[ReplaySummary], None] | None = None,
) -> ReplaySummary:
    """Rebuild profiles from ``source``'s input topics into ``target``'s Redis namespace
    (this engine's ``share`` of the partitions). ``finished`` gets the summary once every
    state write is done, before the clients close."""
    consumer = _consumer(source)
    store = store_for(target)
    pipeline = BatchPipeline.for_settings(target, store, emit=False)
    summary = ReplaySummary()
    loop = asyncio.get_running_loop()

    async def discard(_outputs: Sequence[OutputRecord]) -> None:
        """Replay never produces: rejected input is counted (``dlq``), not re-sent."""

    def fetch() -> asyncio.Future[list[Any]]:
        return loop.run_in_executor(None, consumer.consume, source.batch_max_events, 0.2)

    try:
        consumer.assign(_assignment(consumer, source, since_ms, share))
        started = first = time.monotonic()
        summary.started = started
        idle_since = started
        fetching = fetch()
        while True:
            batch = await fetching
            fetching = fetch()  # the next batch arrives while this one is applied
            records = [_record(m) for m in batch if m.error() is None]
            now = time.monotonic()
            if not records:
                if now - idle_since > idle_seconds:
                    break
                continue
            if summary.events == 0:
                first = summary.started = now
            idle_since = now
            outcome = await pipeline.run(records, discard)
            for (_, kind), count in outcome.outcomes.items():
                summary.outcomes[kind] += count
            summary.events += len(records)
            summary.finished = time.monotonic()
            summary.seconds = summary.finished - first
            if progress is not None:
                progress(summary.events, summary.seconds)
        await fetching
        summary.customers = len(await customer_ids(store))
        if finished is not None:
            finished(summary)
    finally:
        consumer.close()
        pipeline.close()
        await store.close()
    return summary


def _engine(
    source: Settings,
    target: Settings,
    since_ms: int | None,
    idle_seconds: float,
    share: tuple[int, int],
    reports: Any,
) -> None:
    """One replay process: reports ("progress", index, events) and ("done", index,
    summary) to the parent — before closing its clients, so that a close that hangs
    cannot keep the summary back."""
    index = share[0]

    def progress(events: int, _seconds: float) -> None:
        reports.put(("progress", index, events))

    def finished(summary: ReplaySummary) -> None:
        reports.put(("done", index, summary))

    asyncio.run(
        replay(
            source,
            target,
            since_ms=since_ms,
            idle_seconds=idle_seconds,
            progress=progress,
            share=share,
            finished=finished,
        )
    )
    # Leave without the interpreter's exit handlers: the summary is sent (the queue is
    # flushed first) and every state write is done, and an exit handler that waits on the
    # model process could hold the parent up for good (a CI run hung after all the events
    # were replayed). The parent ends an engine that still does not exit.
    reports.close()
    reports.join_thread()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def replay_parallel(
    source: Settings,
    target: Settings,
    processes: int,
    *,
    since_ms: int | None = None,
    idle_seconds: float = 3.0,
    progress: Progress | None = None,
) -> ReplaySummary:
    """:func:`replay` in ``processes`` processes, each on its share of the partitions;
    one summary (rate over the span from the first event any engine applied to the last).
    A failed engine raises ``RuntimeError`` after the others finish."""
    if processes <= 1:
        return asyncio.run(
            replay(source, target, since_ms=since_ms, idle_seconds=idle_seconds, progress=progress)
        )
    context = multiprocessing.get_context("spawn")  # no forked asyncio or Kafka state
    reports = context.Queue()
    engines = [
        context.Process(
            target=_engine,
            args=(source, target, since_ms, idle_seconds, (i, processes), reports),
            name=f"portrait-replay-{i}",
        )
        for i in range(processes)
    ]
    for engine in engines:
        engine.start()
    done = _collect(reports, engines, progress)
    for engine in engines:
        engine.join(timeout=_EXIT_GRACE_SECONDS)
        if engine.exitcode is None:  # its summary is in, its state written: only exiting hangs
            log.warning("a replay engine did not exit; ending it", extra={"reason": "exit"})
            engine.kill()
            engine.join()
    failed = [engine.name for index, engine in enumerate(engines) if index not in done]
    if failed:
        raise RuntimeError(f"replay engines failed: {', '.join(failed)}")
    return _combined(list(done.values()))


def _collect(
    reports: Any, engines: list[Any], progress: Progress | None
) -> dict[int, ReplaySummary]:
    """The engines' summaries, reporting their progress as it comes; stops early when an
    engine died."""
    processes = len(engines)
    counts = [0] * processes
    done: dict[int, ReplaySummary] = {}
    started = time.monotonic()
    while len(done) < processes:
        try:
            kind, index, value = reports.get(timeout=1.0)
        except queue.Empty:
            if any(e.exitcode not in (None, 0) for e in engines if e.pid is not None):
                break
            continue
        if kind == "done":
            done[index] = value
            counts[index] = value.events
        else:
            counts[index] = value
        if progress is not None:
            progress(sum(counts), time.monotonic() - started)
    return done


def _combined(summaries: list[ReplaySummary]) -> ReplaySummary:
    """One summary of several engines' (rate over the span from the first event any
    engine applied to the last)."""
    total = ReplaySummary(events=sum(s.events for s in summaries))
    for part in summaries:
        total.outcomes.update(part.outcomes)
    busy = [s for s in summaries if s.events]
    if busy:
        total.started = min(s.started for s in busy)
        total.finished = max(s.finished for s in busy)
        total.seconds = total.finished - total.started
    total.customers = max((s.customers for s in summaries), default=0)
    return total


async def customer_ids(store: RedisProfileStore) -> list[str]:
    """Ids of the live customers (and accounts: ``acct:<no>``) in a store's namespace."""
    pattern = entity_key(store.prefix, "*", PROFILE_KEY)
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


async def _document(
    store: RedisProfileStore, entity: str, model: Any, settings: Settings
) -> dict[str, Any] | None:
    """The profile of a customer id, or the account document of ``acct:<no>``."""
    if entity.startswith(ACCOUNT_ENTITY):
        return await get_account(store, entity[len(ACCOUNT_ENTITY) :], document_settings(settings))
    return await profile_by_id(store, entity, model, document_settings(settings))


async def verify(live: Settings, rebuilt: Settings) -> dict[str, list[str]]:
    """customer id (or ``acct:<no>``) → differing document paths, for every customer and
    account that differs.

    Customers only in one namespace are reported with the path ``(missing live)`` or
    ``(missing rebuilt)``.
    """
    live_store = store_for(live)
    rebuilt_store = store_for(rebuilt)
    model = default_customer_model()
    report: dict[str, list[str]] = {}
    try:
        rebuilt_ids = await customer_ids(rebuilt_store)
        for cid in rebuilt_ids:
            theirs = await _document(rebuilt_store, cid, model, rebuilt)
            ours = await _document(live_store, cid, model, live)
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
