"""The batch pipeline shared by the Faust worker and the confluent-kafka batch engine.

A batch of raw records goes: decode → read (models) → deltas → one Redis round trip per
chunk → outputs → delivered → confirmed. Both engines call :meth:`BatchPipeline.run` and
acknowledge offsets only after it returns. The pipeline only orchestrates; what it calls
is given to it (reading: ``streams/reading.py``; deltas: ``processors/profile.py``; state:
``state/store.py``; scores: ``models/scorer.py``; outputs: ``streams/outputs.py``),
so tests can hand it fakes. Nothing here knows which engine is calling.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from tenacity import AsyncRetrying, retry_if_not_exception_type, wait_exponential_jitter

from models.registry import ModelRegistry
from models.scorer import Scorer
from portrait import metrics
from portrait.config import Settings
from portrait.events import InputEvent
from processors.assist import PromptTemplates, parse_stats
from processors.document import document_settings, update_of
from processors.envelope import Rejection, decode_event
from processors.identity import identify
from processors.profile import NoUsableIdentifier, build_delta, delta_settings
from state.answers import Applied, ApplyResult, Failed, StaleOffsets, replay_of
from state.store import ProfileStore
from streams.offsets import Ledger
from streams.outputs import AppliedEvent, Outputs, count_rejections, has_outputs, now_iso
from streams.reader import Reading
from streams.reading import ChunkReading, ModelRunner, ReadAhead, model_runner
from streams.records import Accepted, BatchOutcome, Deliver, InputRecord, Snapshot, batch_snapshot

log = logging.getLogger("portrait.pipeline")


class BatchPipeline:
    """Turns batches of input records into state changes and delivered outputs."""

    def __init__(
        self,
        settings: Settings,
        store: ProfileStore,
        reading: ChunkReading,
        scorer: Scorer,
        outputs: Outputs,
        *,
        emit: bool = True,
        pause: Callable[[], Awaitable[None]] | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        """``emit=False`` (replay): state only, no outputs kept pending, nothing scored.
        ``pause``: awaited before each chunk (the bulk lane waits for the realtime one,
        ``streams/lanes.py``); ``ledger``: input positions kept with the state."""
        self.settings = settings
        self.store = store
        self.reading = reading
        self.scorer = scorer
        self.outputs = outputs
        self.emit = emit
        self.pause = pause
        self.ledger = ledger
        self.deltas = delta_settings(settings)
        self.retention_ms = settings.dedup_retention_seconds * 1000
        self.access_seconds = int(settings.agent_access_hours * 3600)

    @classmethod
    def for_settings(
        cls,
        settings: Settings,
        store: ProfileStore,
        registry: ModelRegistry | None = None,
        *,
        emit: bool = True,
        runner: ModelRunner | None = None,
        pause: Callable[[], Awaitable[None]] | None = None,
    ) -> BatchPipeline:
        """The pipeline these settings describe: their model runner (or ``runner``, one
        another pipeline shares), scorer (the registry's model, learning from feedback)
        and prompt templates."""
        reading = ChunkReading(runner or model_runner(settings), settings.reads_images)
        scorer = Scorer.for_settings(settings, registry) if emit else Scorer(None)
        templates = PromptTemplates.load(settings.prompts_file)
        outputs = Outputs(settings, document_settings(settings), templates)
        return cls(settings, store, reading, scorer, outputs, emit=emit, pause=pause)

    async def start_models(self) -> None:
        """Load every model now, before the first batch waits on one."""
        await asyncio.wrap_future(self.reading.runner.start())

    def close(self) -> None:
        """Stop the model thread or process and the learner."""
        self.reading.runner.close()
        self.scorer.close()

    def read_ahead(self, records: Sequence[InputRecord]) -> ReadAhead:
        """Decode a batch and queue its chunks for the models, in order; call it as soon
        as the batch arrives (reading never depends on state)."""
        size = self.settings.redis_chunk_events
        chunks = [records[start : start + size] for start in range(0, len(records), size)]
        limit = self.settings.max_event_bytes
        decoded = [[decode_event(r.value, limit) for r in chunk] for chunk in chunks]
        return ReadAhead(records, chunks, decoded, [self.reading.submit(d) for d in decoded])

    async def run(
        self, records: Sequence[InputRecord], deliver: Deliver, ahead: ReadAhead | None = None
    ) -> BatchOutcome:
        """Process a batch until its outputs are delivered and confirmed; retries with
        backoff on failure (safe: every state update is idempotent). Returns only when the
        caller may acknowledge the batch's offsets. ``ahead``: the batch's
        :meth:`read_ahead`, used by the first attempt (a retry reads again)."""
        started = time.perf_counter()
        retrying = AsyncRetrying(
            wait=wait_exponential_jitter(initial=0.2, max=5.0),
            retry=retry_if_not_exception_type((asyncio.CancelledError, StaleOffsets)),
            before_sleep=self._retrying,
        )
        snapshot: Snapshot | None = None  # a retry's outputs read what the first read
        async for attempt in retrying:
            with attempt:
                await self.scorer.follow_registry()
                first = attempt.retry_state.attempt_number == 1
                snapshot = snapshot or await batch_snapshot(self.store)
                outcome = await self.prepare(records, ahead if first else None, snapshot)
                await deliver(outcome.outputs)
                await self.store.confirm_delivered(outcome.confirm)
                await self.store.record_contacts(outcome.contacts, self.access_seconds)
                await self.scorer.learn_if_ready()
        if self.ledger is not None:
            self.ledger.advance(records)
        for (topic, kind), count in outcome.outcomes.items():
            metrics.EVENTS.labels(topic, kind).inc(count)
        for topic, count in Counter(output.topic for output in outcome.outputs).items():
            metrics.OUTPUTS.labels(topic).inc(count)
        metrics.BATCH_SIZE.observe(len(records))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        return outcome

    @staticmethod
    def _retrying(state: Any) -> None:
        metrics.BATCH_RETRIES.inc()
        log.error(
            "batch failed; retrying",
            exc_info=state.outcome.exception() if state.outcome else None,
            extra={"attempt": state.attempt_number},
        )

    async def prepare(
        self, records: Sequence[InputRecord], ahead: ReadAhead | None = None, snapshot: Any = None
    ) -> BatchOutcome:
        """Read, apply and build every output of a batch (nothing delivered yet).

        The models read the chunks in order while this builds each read chunk's deltas
        and the outputs of the chunk before it, and Redis applies one chunk while the
        next is prepared. The store runs chunks in submission order, so the result is
        the same as one after another.
        """
        ahead = ahead or self.read_ahead(records)
        outcome, emitted, emitted_at = BatchOutcome(), set[str](), now_iso()
        # one snapshot per batch; its own feedback is added to the statistics as it goes
        population, counted = snapshot or await batch_snapshot(self.store)
        self.outputs.document = replace(self.outputs.document, population=population)
        stats = Counter(counted)
        waiting: list[Accepted] = []
        in_flight: asyncio.Future[list[ApplyResult]] | None = None
        plans = self.ledger.plan(ahead.chunks) if self.ledger else [b""] * len(ahead.chunks)
        try:
            for chunk, decoded, reading, plan in zip(
                ahead.chunks, ahead.decoded, ahead.readings, plans, strict=True
            ):
                if self.pause is not None:
                    await self.pause()
                read = await self.reading.settle(decoded, reading)
                accepted, deltas = self._deltas(chunk, decoded, read, stats, outcome)
                # queue this chunk's update; build the previous chunk's outputs meanwhile
                queued = asyncio.ensure_future(self.store.apply(deltas, plan))
                for _ in range(3):  # a few loop turns: enough for the request to queue
                    await asyncio.sleep(0)
                results = await in_flight if in_flight is not None else []
                in_flight = queued
                self._emit(waiting, results, outcome, emitted, emitted_at)
                waiting = accepted
            if in_flight is not None:
                self._emit(waiting, await in_flight, outcome, emitted, emitted_at)
        finally:  # a failed batch leaves no update or reading behind to fail unobserved
            ahead.cancel()
            if in_flight is not None and not in_flight.done():
                in_flight.cancel()
        return outcome

    def _deltas(
        self,
        records: Sequence[InputRecord],
        decoded: Sequence[InputEvent | Rejection],
        reading: Reading,
        stats: Counter[str],
        outcome: BatchOutcome,
    ) -> tuple[list[Accepted], list[bytes]]:
        """Accepted events and their deltas; rejected records go out as DLQ records, and
        so (beside their applied event) do records with an image that could not be read."""
        accepted: list[Accepted] = []
        deltas: list[bytes] = []
        now_ms = int(time.time() * 1000)
        ranked = parse_stats(stats)
        for index, (record, event) in enumerate(zip(records, decoded, strict=True)):
            if reading.image_errors[index]:
                outcome.outputs.append(
                    self.outputs.images_rejected(record, reading.image_errors[index])
                )
            if isinstance(event, Rejection):
                self._reject(record, event, outcome)
                continue
            emotion = reading.emotions[index]
            try:
                delta = build_delta(
                    event,
                    self.deltas,
                    emotion,
                    ranked,
                    reading.facts[index],
                    reading.keywords[index],
                    reading.intents[index],
                )
            except NoUsableIdentifier:
                count_rejections(identify(event.customer, self.deltas.identity).rejected)
                self._reject(record, Rejection("identifiers_rejected"), outcome)
                continue
            except Exception as exc:  # bad input must never stop the worker
                self._reject(record, Rejection(f"unprocessable: {type(exc).__name__}"), outcome)
                continue
            accepted.append(Accepted(record, event, emotion, delta.rejected))
            deltas.append(delta.to_json(now_ms, self.retention_ms, quiet=not self.emit))
            if delta.product_stats:  # later call turns in this batch see this feedback
                stats.update(delta.product_stats)
                ranked = parse_stats(stats)
        return accepted, deltas

    def _reject(self, record: InputRecord, rejection: Rejection, outcome: BatchOutcome) -> None:
        outcome.outputs.append(self.outputs.rejected(record, rejection))
        outcome.outcomes[(record.topic, "dlq")] += 1

    def _emit(
        self,
        accepted: Sequence[Accepted],
        results: Sequence[ApplyResult],
        outcome: BatchOutcome,
        emitted: set[str],
        emitted_at: str,
    ) -> None:
        """Outputs for a chunk's events, in order; every changed customer scored in one
        call. A redelivery whose outputs were never confirmed re-emits them (same ids); a
        duplicate of an event earlier in this batch has its outputs already."""
        # (…, first delivery), in input order: outputs keep the order of their inputs
        applied: list[tuple[Accepted, ApplyResult, bool]] = []
        for item, result in zip(accepted, results, strict=True):
            kind = {"dup": "duplicate", "error": "dlq", "suppressed": "suppressed"}.get(
                result.status, "ok"
            )
            outcome.outcomes[(item.record.topic, kind)] += 1
            if isinstance(result, Failed):  # to the DLQ (counted above)
                rejection = Rejection(f"state_error: {result.error}")
                outcome.outputs.append(self.outputs.rejected(item.record, rejection))
            elif has_outputs(result, self.emit):
                applied.append((item, result, True))
            elif (again := replay_of(result)) and item.event.event_id not in emitted:
                applied.append((item, again, False))
            emitted.add(item.event.event_id)
        people = [(r, s) for _, r, _ in applied if isinstance(r, Applied) and (s := r.state)]
        updates = {
            id(r): update_of(s, r.old, r.ids_added, r.accounts, r.links_added) for r, s in people
        }
        customers = [(r.customer_id, updates[id(r)]) for r, _ in people]
        scores = dict(zip(updates, self.scorer.score(customers), strict=True))
        later = Counter(cid for cid, _ in customers)  # a customer's updates still to come
        for item, result, first in applied:
            event_id = item.event.event_id
            if not isinstance(result, Applied):  # erasures, account-only events: no person
                outputs, confirm = self.outputs.unscored(event_id, result, emitted_at)
                outcome.outputs.extend(outputs)
                outcome.confirm.extend(confirm)
                if first:
                    count_rejections(item.rejected)
                continue
            update, pair, cid = updates[id(result)], scores[id(result)], result.customer_id
            done = AppliedEvent(item.record, item.event, item.emotion, result, update, pair)
            later[cid] -= 1
            outcome.outputs.extend(self.outputs.applied(done, emitted_at, later[cid] > 0))
            outcome.confirm.append((cid, event_id))
            if first:
                outcome.meet(item.event, cid)
                metrics.MERGES.inc(len(result.merged))
                self.scorer.observe(item.event, update, pair[1])
                count_rejections([*item.rejected, *result.rejections])
