"""The batch pipeline shared by the Faust worker and the confluent-kafka batch engine.

A batch of raw records goes: decode → deltas → one Redis round trip → output events.
Both engines call :meth:`BatchPipeline.run`, which also delivers the outputs and confirms
them to the store; the engine acknowledges offsets only after it returns. Nothing here
knows which engine is calling.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from models.customer_model import default_customer_model
from models.online import CustomerLearner, labels_from_feedback, model_from_candidate
from models.prosody import fuse
from models.scorer import score_sections
from portrait import metrics
from portrait.config import Settings
from portrait.events import (
    CallSegment,
    ChatMessage,
    FeedbackRecorded,
    InputEvent,
    RelationChanged,
)
from portrait.state.registry import ModelRegistry, customer_model_in_use
from portrait.state.store import ApplyResult, ProfileStore
from processors.assist import (
    CallAdvice,
    ProductStats,
    PromptTemplates,
    assist_settings,
    chat_response,
    language_of,
    parse_stats,
    prompt_id,
    prompt_reasons,
)
from processors.attributes import iso_from_ms
from processors.document import (
    Update,
    changed_fields,
    document_from_state,
    document_settings,
    update_of,
)
from processors.emotion import EmotionResult, emotion_document
from processors.envelope import Rejection, decode_event
from processors.features import feature_vector
from processors.indicators import Population
from processors.profile import DeltaSettings, build_delta
from processors.relationships import became_friend, connected_employees
from streams.reading import Reading, ReadRequest, model_runner

log = logging.getLogger("portrait.pipeline")


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One consumed Kafka record, as both engines hand it over."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: float | None = None
    """The record's Kafka timestamp: when it reached the broker (prompt latency)."""


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes


@dataclass(slots=True)
class BatchOutcome:
    """Outputs of a batch, the (customer, event) pairs to confirm, and counts by outcome."""

    outputs: list[OutputRecord] = field(default_factory=list)
    applied: list[tuple[str, str]] = field(default_factory=list)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)


Deliver = Callable[[Sequence[OutputRecord]], Awaitable[None]]
Accepted = tuple[InputRecord, InputEvent, EmotionResult | None]
"""An accepted event with its record and the emotion read from its text."""


def output_event_id(kind: str, source_event_id: str, customer_id: str) -> str:
    """Deterministic id of an output, so a re-emitted output carries the same id."""
    digest = hashlib.sha256(f"{kind}|{source_event_id}|{customer_id}".encode()).hexdigest()
    return digest[:32]


def _now_iso() -> str:
    return iso_from_ms(time.time() * 1000)


@dataclass(slots=True)
class ReadAhead:
    """A batch decoded, chunk by chunk, and handed to the models to read before it is
    applied: the models read it while the batch before it is applied and delivered."""

    records: Sequence[InputRecord]
    chunks: list[Sequence[InputRecord]]
    decoded: list[list[InputEvent | Rejection]]
    readings: list[asyncio.Future[Reading]]

    def cancel(self) -> None:
        """Drop the readings not yet started (a batch given up on)."""
        for reading in self.readings:
            reading.cancel()


# a text any working model reads: tells a failing input from failing models
_PROBE = ReadRequest(1, [(0, "好的，谢谢")], [], [])


def _error(exc: BaseException) -> dict[str, str]:
    return {"error": type(exc).__name__}


class BatchPipeline:
    """Turns batches of input records into state changes and output records."""

    def __init__(
        self,
        settings: Settings,
        store: ProfileStore,
        registry: ModelRegistry | None = None,
        *,
        emit: bool = True,
    ) -> None:
        """``emit=False`` (replay) applies state only: no profile events or prompts are built
        and the customer model and learner are not used (scores are never stored)."""
        self.settings = settings
        self.emit = emit
        if not emit:
            settings = settings.model_copy(update={"scores_enabled": False, "learn_every": 0})
        self.store = store
        self.registry = registry
        self.delta_settings = DeltaSettings(
            timezone=ZoneInfo(settings.timezone),
            half_life_days=settings.preference_half_life_days,
            attribute_confidence=settings.attribute_confidence,
            assist=assist_settings(settings),
            link_fact_identities=settings.facts_link_identities,
            problem_intents=settings.problem_intents,
            trends_window_ms=settings.trends_window_seconds * 1000,
            trends_retention_ms=settings.trends_retention_seconds * 1000,
        )
        self.prompts = PromptTemplates.load(settings.prompts_file)
        self.prompt_topic = settings.topic("agent-prompts")
        self._stats_raw: Counter[str] = Counter()
        self._stats: dict[str, dict[str, ProductStats]] = {}
        self.retention_ms = settings.dedup_retention_seconds * 1000
        self.ocr = settings.reads_images
        self.models = model_runner(settings)
        self.customer_model = default_customer_model() if settings.scores_enabled else None
        self._last_scores: OrderedDict[str, tuple[str | None, dict[str, Any]]] = OrderedDict()
        self.learner = (
            CustomerLearner(
                self.customer_model.version,
                learn_every=settings.learn_every,
                tolerance=settings.learn_tolerance,
            )
            if self.customer_model is not None and settings.learn_every > 0
            else None
        )
        self._model_checked = 0.0
        self._learner_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learner")
        self.document = document_settings(settings)
        self.profile_topic = settings.topic("profile-changes")
        self.dlq_topic = settings.topic("dlq")

    async def start_models(self) -> None:
        """Load every model now, before the first batch waits on one."""
        await asyncio.wrap_future(self.models.start())

    def close(self) -> None:
        """Stop the model thread or process."""
        self.models.close()
        self._learner_thread.shutdown(wait=False)

    def dlq_record(self, record: InputRecord, rejection: Rejection) -> OutputRecord:
        """The DLQ record for a rejected input: original bytes, where they came from, why."""
        where = f"{record.topic}|{record.partition}|{record.offset}"
        body = {
            "type": "dlq.record",
            "event_id": hashlib.sha256(where.encode()).hexdigest()[:32],
            "reason": rejection.reason,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "key_b64": base64.b64encode(record.key).decode() if record.key is not None else None,
            "value_b64": base64.b64encode(record.value or b"").decode(),
            "rejected_at": _now_iso(),
        }
        return OutputRecord(self.dlq_topic, record.key, orjson.dumps(body))

    def _profile_outputs(
        self,
        event_id: str,
        result: ApplyResult,
        update: Update,
        scores: tuple[dict[str, Any], dict[str, Any]],
        emitted_at: str,
    ) -> list[OutputRecord]:
        assert result.customer_id is not None
        cid = result.customer_id
        changes = changed_fields(update, {"scores": scores}, self.document)
        version = int(update.after["m"].get("version", 0))
        notify = connected_employees(update.after["r"])
        key = cid.encode()
        outputs = []
        for loser in result.merged:
            merged = {
                "type": "profile.merged",
                "event_id": output_event_id("profile.merged", event_id, loser),
                "source_event_id": event_id,
                "customer_id": cid,
                "merged_id": loser,
                "version": version,
                "notify": notify,
                "emitted_at": emitted_at,
            }
            outputs.append(OutputRecord(self.profile_topic, key, orjson.dumps(merged)))
        changed = {
            "type": "profile.changed",
            "event_id": output_event_id("profile.changed", event_id, cid),
            "source_event_id": event_id,
            "customer_id": cid,
            "version": version,
            "notify": notify,
            "changed": changes,
            "emitted_at": emitted_at,
        }
        outputs.append(OutputRecord(self.profile_topic, key, orjson.dumps(changed)))
        return outputs

    def _prompt(
        self,
        record: InputRecord,
        event: InputEvent,
        emotion: EmotionResult | None,
        result: ApplyResult,
        update: Update,
        scores: tuple[dict[str, Any], dict[str, Any]],
    ) -> OutputRecord | None:
        """The agent prompt an applied event calls for, if any (processors/assist.py)."""
        if emotion is None or result.customer_id is None:
            return None
        body: dict[str, Any]
        if isinstance(event, CallSegment) and result.prompt is not None:
            advice: CallAdvice = result.prompt
            channel, kind, agent = "call", advice.kind, advice.agent_id or "unassigned"
            body = {"call_id": event.payload.call_id, "phase": advice.phase}
            body["product"] = advice.product
            body["reasons"] = prompt_reasons(advice, emotion.label)
            language, rate = language_of(event.payload.text), advice.rate
        elif isinstance(event, ChatMessage) and event.payload.direction == "inbound":
            after = update.after
            streak = emotion_document(after["r"], after["e"], after["n"])["negative_streak"]
            response = chat_response(
                emotion.label, streak, scores[1]["value"], self.delta_settings.assist
            )
            if response is None:
                return None
            channel, (kind, reasons), agent = "chat", response, event.payload.employee_id
            body = {"conversation_id": event.payload.conversation_id, "phase": None}
            body["product"], body["reasons"] = None, reasons
            language, rate = language_of(event.payload.text), None
        else:
            return None
        now_ms = time.time() * 1000
        latency_ms = max(now_ms - record.timestamp_ms, 0.0) if record.timestamp_ms else 0.0
        metrics.PROMPTS.labels(channel, kind).inc()
        metrics.PROMPT_LATENCY.observe(latency_ms / 1000)
        body.update(
            {
                "type": "agent.prompt",
                "event_id": output_event_id("agent.prompt", event.event_id, result.customer_id),
                "source_event_id": event.event_id,
                "customer_id": result.customer_id,
                "emitted_at": iso_from_ms(now_ms),
                "prompt_id": prompt_id(event.event_id, agent),
                "agent_id": agent,
                "kind": kind,
                "emotion": emotion.label,
                "text": self.prompts.render(channel, kind, language, body["product"], rate),
                "latency_ms": round(latency_ms, 1),
            }
        )
        return OutputRecord(self.prompt_topic, agent.encode(), orjson.dumps(body))

    def _snapshot(
        self,
        event: RelationChanged,
        result: ApplyResult,
        scores: dict[str, Any],
        emitted_at: str,
    ) -> OutputRecord:
        """The full profile for an employee who just added the customer as a friend."""
        assert result.customer_id is not None and result.state is not None
        cid = result.customer_id
        document = document_from_state(cid, result.state, scores, self.document)
        body = {
            "type": "profile.snapshot",
            "event_id": output_event_id("profile.snapshot", event.event_id, cid),
            "source_event_id": event.event_id,
            "customer_id": cid,
            "version": document["version"],
            "notify": [event.payload.employee_id],
            "employee_id": event.payload.employee_id,
            "profile": document,
            "emitted_at": emitted_at,
        }
        return OutputRecord(self.profile_topic, cid.encode(), orjson.dumps(body))

    def _erased_outputs(
        self, event_id: str, result: ApplyResult, emitted_at: str
    ) -> list[OutputRecord]:
        outputs = []
        for cid in result.erased:
            body = {
                "type": "profile.erased",
                "event_id": output_event_id("profile.erased", event_id, cid),
                "source_event_id": event_id,
                "customer_id": cid,
                "version": 0,
                "notify": [],
                "emitted_at": emitted_at,
            }
            outputs.append(OutputRecord(self.profile_topic, cid.encode(), orjson.dumps(body)))
        return outputs

    def _parse(self, records: Sequence[InputRecord]) -> list[InputEvent | Rejection]:
        """Each record decoded and validated, or the reason it was not."""
        return [decode_event(record.value, self.settings.max_event_bytes) for record in records]

    def _deltas(
        self,
        records: Sequence[InputRecord],
        decoded: Sequence[InputEvent | Rejection],
        reading: Reading,
        outcome: BatchOutcome,
        now_ms: int,
    ) -> tuple[list[Accepted], list[bytes]]:
        """Accepted events with their records and emotions, and their deltas; rejected
        records go out as DLQ records, and so (beside their applied event) do records
        with an image that could not be read."""
        accepted: list[Accepted] = []
        deltas: list[bytes] = []
        for record, event, emotion, facts, image_errors, keywords, intent in zip(
            records,
            decoded,
            reading.emotions,
            reading.facts,
            reading.image_errors,
            reading.keywords,
            reading.intents,
            strict=True,
        ):
            if image_errors:
                self._image_rejected(record, image_errors, outcome)
            if not isinstance(event, Rejection):
                try:
                    delta = build_delta(
                        event,
                        self.delta_settings,
                        emotion,
                        self._stats,
                        facts,
                        keywords,
                        intent,
                    )
                except Exception as exc:  # bad input must never stop the worker
                    event = Rejection(f"unprocessable: {type(exc).__name__}")
                else:
                    accepted.append((record, event, emotion))
                    deltas.append(delta.to_json(now_ms, self.retention_ms, quiet=not self.emit))
                    if delta.product_stats:  # later calls in this batch see this feedback
                        self._stats_raw.update(delta.product_stats)
                        self._stats = parse_stats(self._stats_raw)
                    continue
            outcome.outputs.append(self.dlq_record(record, event))
            outcome.outcomes[(record.topic, "dlq")] += 1
            metrics.DLQ.labels(event.code).inc()
            log.warning(
                "rejected input",
                extra={
                    "topic": record.topic,
                    "partition": record.partition,
                    "reason": event.code,
                },
            )
        return accepted, deltas

    def _image_rejected(
        self, record: InputRecord, errors: Sequence[tuple[int, str]], outcome: BatchOutcome
    ) -> None:
        """One DLQ record for a message's unreadable images (the message itself applies)."""
        codes = sorted({code for _, code in errors})
        where = ", ".join(f"image {index} {code}" for index, code in errors)
        outcome.outputs.append(self.dlq_record(record, Rejection(f"{codes[0]}: {where}")))
        for _, code in errors:
            metrics.DLQ.labels(code).inc()
        log.warning(
            "unreadable image",
            extra={"topic": record.topic, "partition": record.partition, "reason": codes[0]},
        )

    def _submit(self, request: ReadRequest) -> asyncio.Future[Reading]:
        """The request's reading, from the models — or at once when there is nothing to
        read (no round trip to the model process)."""
        loop = asyncio.get_running_loop()
        if request.words or request.fact_texts or request.images:
            return asyncio.wrap_future(self.models.submit(request), loop=loop)
        nothing = loop.create_future()
        nothing.set_result(Reading.empty(request.size))
        return nothing

    async def _reading(
        self, decoded: list[InputEvent | Rejection], reading: asyncio.Future[Reading]
    ) -> Reading:
        """A chunk's reading, also when the models fail on it (an exception, or the model
        process died): the chunk is read again, then event by event. An event the models
        fail on alone is rejected (``unprocessable``), so one bad input cannot hold the
        worker up — unless they also fail on a plain probe text: then the fault is not the
        input's, and this raises (the batch is retried)."""
        try:
            return await reading
        except Exception as exc:
            log.warning("the models failed on a chunk; reading it again", extra=_error(exc))
        try:
            return await self._submit(ReadRequest.of(decoded, self.ocr))
        except Exception as exc:
            log.warning(
                "the models failed on a chunk twice; reading it event by event", extra=_error(exc)
            )
        parts = []
        for index, event in enumerate(decoded):
            try:
                parts.append(await self._submit(ReadRequest.of([event], self.ocr)))
            except Exception as exc:
                await self._submit(_PROBE)  # raises if the models fail on anything
                decoded[index] = Rejection(
                    f"unprocessable: the models failed on it ({type(exc).__name__})"
                )
                parts.append(Reading.empty(1))
        return Reading.joined(parts)

    def _received(self, decoded: Sequence[InputEvent | Rejection], reading: Reading) -> Reading:
        """A chunk's reading as its deltas need it: each customer call turn's emotion fused
        with its voice; the models' times go to the metrics."""
        for index, event in enumerate(decoded):
            emotion = reading.emotions[index]
            if isinstance(event, CallSegment) and emotion is not None:
                reading.emotions[index] = fuse(emotion, event.payload.prosody)
        for model, seconds in reading.seconds.items():
            metrics.MODEL_SECONDS.labels(model).observe(seconds)
        return reading

    def _emit(
        self,
        accepted: Sequence[Accepted],
        results: Sequence[ApplyResult],
        outcome: BatchOutcome,
        emitted: set[str],
        emitted_at: str,
    ) -> None:
        """Outputs for applied events, in order; every changed customer scored in one call."""
        if not self.emit:
            self._count(accepted, results, outcome)
            return
        applied: list[tuple[int, ApplyResult]] = []
        for index, result in enumerate(results):
            if result.status == "ok":
                applied.append((index, result))
            elif result.status == "dup" and result.replay is not None:
                applied.append((index, result.replay))
        updates = {
            index: update_of(result.state, result.old, result.ids_added)
            for index, result in applied
            if result.state is not None
        }
        scores = self._score(applied, updates)
        self._observe_feedback(accepted, results, updates, scores)
        for index, ((record, event, emotion), result) in enumerate(
            zip(accepted, results, strict=True)
        ):
            kind = "ok"
            if result.status == "ok":
                outcome.outputs.extend(
                    self._applied_outputs(
                        record, event, emotion, result, updates[index], scores[index], emitted_at
                    )
                )
                assert result.customer_id is not None
                outcome.applied.append((result.customer_id, event.event_id))
                metrics.MERGES.inc(len(result.merged))
                if isinstance(event, RelationChanged) and became_friend(
                    event.payload.employee_id, updates[index].before["r"], updates[index].after["r"]
                ):
                    outcome.outputs.append(
                        self._snapshot(event, result, scores[index][1], emitted_at)
                    )
            elif result.status == "dup":
                kind = "duplicate"
                # A redelivery whose outputs were never confirmed re-emits them (same ids);
                # a duplicate of an event earlier in this batch has its outputs already.
                replayable = event.event_id not in emitted
                if replayable and result.replay is not None and result.customer_id is not None:
                    outcome.outputs.extend(
                        self._applied_outputs(
                            record,
                            event,
                            emotion,
                            result.replay,
                            updates[index],
                            scores[index],
                            emitted_at,
                        )
                    )
                    outcome.applied.append((result.customer_id, event.event_id))
            elif result.status == "erased":
                outcome.outputs.extend(self._erased_outputs(event.event_id, result, emitted_at))
            elif result.status == "error":
                kind = "dlq"
                outcome.outputs.append(self._state_error(record, result))
            outcome.outcomes[(record.topic, kind)] += 1
            emitted.add(event.event_id)

    def _state_error(self, record: InputRecord, result: ApplyResult) -> OutputRecord:
        """The DLQ record of an event the state script failed on, counted."""
        metrics.DLQ.labels("state_error").inc()
        return self.dlq_record(record, Rejection(f"state_error: {result.error}"))

    def _applied_outputs(
        self,
        record: InputRecord,
        event: InputEvent,
        emotion: EmotionResult | None,
        result: ApplyResult,
        update: Update,
        scores: tuple[dict[str, Any], dict[str, Any]],
        emitted_at: str,
    ) -> list[OutputRecord]:
        """Profile events and the agent prompt, if any, of an applied (or replayed) event."""
        outputs = self._profile_outputs(event.event_id, result, update, scores, emitted_at)
        prompt = self._prompt(record, event, emotion, result, update, scores)
        if prompt is not None:
            outputs.append(prompt)
        return outputs

    def _count(
        self, accepted: Sequence[Accepted], results: Sequence[ApplyResult], outcome: BatchOutcome
    ) -> None:
        """Outcomes only (replay): quiet deltas keep nothing pending, nothing is built."""
        kinds = {"dup": "duplicate", "error": "dlq"}
        for (record, _, _), result in zip(accepted, results, strict=True):
            if result.status == "error":
                outcome.outputs.append(self._state_error(record, result))
            outcome.outcomes[(record.topic, kinds.get(result.status, "ok"))] += 1

    def _observe_feedback(
        self,
        accepted: Sequence[Accepted],
        results: Sequence[ApplyResult],
        updates: dict[int, Update],
        scores: dict[int, tuple[dict[str, Any], dict[str, Any]]],
    ) -> None:
        """Feedback with a satisfaction score becomes a training example for the learner."""
        if self.learner is None:
            return
        for index, ((_, event, _), result) in enumerate(zip(accepted, results, strict=True)):
            if (
                isinstance(event, FeedbackRecorded)
                and event.payload.satisfaction is not None
                and result.status == "ok"
                and index in updates
            ):
                value = scores[index][1]["value"]
                labels = labels_from_feedback(
                    event.payload.satisfaction,
                    event.payload.outcome == "accepted",
                    0.5 if value is None else value,
                )
                self.learner.observe(feature_vector(updates[index].after), labels)

    async def _learn_if_ready(self) -> None:
        """A learning round when enough feedback waits; a good candidate becomes current."""
        if self.learner is None or not self.learner.ready or self.customer_model is None:
            return
        number = await self.registry.next_number() if self.registry is not None else 0
        version = f"{self.learner.base_version}+{number or self.learner.rounds + 1}"
        loop = asyncio.get_running_loop()
        candidate = await loop.run_in_executor(self._learner_thread, self.learner.learn, version)
        result = "accepted" if candidate.accepted else "rejected"
        metrics.MODEL_UPDATES.labels("customer", result).inc()
        log.info(
            "customer model learning round",
            extra={"reason": result, "events": self.learner.learn_every},
        )
        if not candidate.accepted:
            return
        self.customer_model = model_from_candidate(candidate, self.customer_model)
        if self.registry is not None:
            await self.registry.publish(candidate.version, candidate.onnx, candidate.quality)

    async def _follow_registry(self) -> None:
        """Score with the pinned version, or the registry's current one (checked every 30 s)."""
        if self.registry is None or self.customer_model is None:
            return
        now = time.monotonic()
        if now - self._model_checked < 30.0:
            return
        self._model_checked = now
        wanted = self.settings.customer_model_version or await self.registry.current()
        if wanted and wanted != self.customer_model.version:
            self.customer_model = await customer_model_in_use(self.registry, wanted)

    def _score(
        self, applied: Sequence[tuple[int, ApplyResult]], updates: dict[int, Update]
    ) -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
        """(old, new) ``profile.scores`` of every update, in one model call.

        The new scores of a customer are remembered with its version, so the customer's
        next update here reuses them as its old scores instead of scoring twice.
        """
        customer = {index: result.customer_id or "" for index, result in applied}
        missing_before = []
        before: dict[int, dict[str, Any]] = {}
        for index, update in updates.items():
            known = self._last_scores.get(customer[index])
            if (
                known is not None
                and known[0] == update.before["m"].get("version")
                and self.customer_model is not None
                and known[1]["model_version"] == self.customer_model.version
            ):
                before[index] = known[1]
            else:
                missing_before.append(index)
        started = time.perf_counter()
        scored = score_sections(
            self.customer_model,
            [updates[i].before for i in missing_before] + [u.after for u in updates.values()],
        )
        if updates and self.customer_model is not None:
            metrics.MODEL_SECONDS.labels("customer").observe(time.perf_counter() - started)
        before.update(zip(missing_before, scored, strict=False))
        after = dict(zip(updates, scored[len(missing_before) :], strict=True))
        for index, update in updates.items():
            document = after[index]
            if document["model_version"] is not None:
                for name in ("value", "loyalty", "churn_risk"):
                    metrics.SCORES.labels(document["model_version"], name).observe(document[name])
            self._last_scores[customer[index]] = (update.after["m"].get("version"), document)
            self._last_scores.move_to_end(customer[index])
        while len(self._last_scores) > 100_000:
            self._last_scores.popitem(last=False)
        return {index: (before[index], after[index]) for index in updates}

    def read_ahead(self, records: Sequence[InputRecord]) -> ReadAhead:
        """Decode a batch and queue its chunks for the models, in order; call it as soon
        as the batch arrives (reading never depends on state)."""
        size = self.settings.redis_chunk_events
        chunks = [records[start : start + size] for start in range(0, len(records), size)]
        decoded = [self._parse(chunk) for chunk in chunks]
        readings = [self._submit(ReadRequest.of(d, self.ocr)) for d in decoded]
        return ReadAhead(records, chunks, decoded, readings)

    async def prepare(
        self, records: Sequence[InputRecord], ahead: ReadAhead | None = None
    ) -> BatchOutcome:
        """Decode, apply to the store and build every output of a batch.

        The models read the chunks in order in their own process (or thread) while this
        thread builds each read chunk's deltas and the outputs of the chunk before it, and
        Redis applies one chunk while the next is prepared. The store runs chunks in
        submission order, so the result is the same as one pipeline.
        """
        ahead = ahead or self.read_ahead(records)
        outcome = BatchOutcome()
        emitted: set[str] = set()
        emitted_at = _now_iso()
        # one population snapshot per batch: wealth is a percentile among all customers
        population = Population.of(await self.store.population())
        self.document = replace(self.document, population=population)
        # one statistics snapshot per batch; the batch's own feedback is added as it goes
        self._stats_raw = Counter(
            {name: int(count) for name, count in (await self.store.product_stats()).items()}
        )
        self._stats = parse_stats(self._stats_raw)
        now_ms = int(time.time() * 1000)
        waiting: list[Accepted] = []
        in_flight: asyncio.Future[list[ApplyResult]] | None = None
        updates: list[asyncio.Future[list[ApplyResult]]] = []
        try:
            for chunk, decoded, reading in zip(
                ahead.chunks, ahead.decoded, ahead.readings, strict=True
            ):
                # deltas never depend on earlier answers of the store
                read = self._received(decoded, await self._reading(decoded, reading))
                accepted, deltas = self._deltas(chunk, decoded, read, outcome, now_ms)
                # Queue this chunk's update (the store sends it as soon as the previous
                # one is answered), then build the previous chunk's outputs meanwhile.
                queued = asyncio.ensure_future(self.store.apply(deltas))
                updates.append(queued)
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
            for update in updates:
                if not update.done():
                    update.cancel()
        return outcome

    async def run(
        self, records: Sequence[InputRecord], deliver: Deliver, ahead: ReadAhead | None = None
    ) -> BatchOutcome:
        """Process a batch until its outputs are delivered and confirmed; retries on failure.

        Safe to retry because every state update is idempotent; returns only when the
        caller may acknowledge the batch's offsets. ``ahead``: the batch's
        :meth:`read_ahead` (used by the first attempt; a retry reads again).
        """
        started = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._follow_registry()
                outcome = await self.prepare(records, ahead if attempt == 1 else None)
                await deliver(outcome.outputs)
                await self.store.confirm_delivered(outcome.applied)
                await self._learn_if_ready()
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                metrics.BATCH_RETRIES.inc()
                log.exception(
                    "batch failed; retrying", extra={"events": len(records), "attempt": attempt}
                )
                await asyncio.sleep(min(0.1 * 2**attempt, 5.0))
        for (topic, kind), count in outcome.outcomes.items():
            metrics.EVENTS.labels(topic, kind).inc(count)
        for topic, count in Counter(output.topic for output in outcome.outputs).items():
            metrics.OUTPUTS.labels(topic).inc(count)
        metrics.BATCH_SIZE.observe(len(records))
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        return outcome
