"""The pipeline's orchestration with fakes for every part it is given: no Redis, no
models, no broker."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Sequence
from typing import Any

import orjson

from models.scorer import Scorer
from portrait.config import Settings
from processors.assist import PromptTemplates
from processors.document import DocumentSettings
from state.answers import Applied, ApplyResult, Duplicate, Erased
from state.store import Contact
from streams.outputs import Outputs
from streams.pipeline import BatchPipeline
from streams.reader import Reading, ReadRequest
from streams.reading import ChunkReading
from streams.testing import ListSink, input_records
from tests.support.envelopes import chan, event

SETTINGS = Settings(redis_chunk_events=2)


class FakeRunner:
    """Reads nothing: every chunk's reading is empty."""

    def start(self) -> concurrent.futures.Future[Any]:
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()
        done.set_result(None)
        return done

    def submit(self, request: ReadRequest) -> concurrent.futures.Future[Reading]:
        done: concurrent.futures.Future[Reading] = concurrent.futures.Future()
        done.set_result(Reading.empty(request.size))
        return done

    def close(self) -> None:
        pass


class FakeStore:
    """Answers every event as applied to customer ``c-<event id>`` (version 1); an event
    id seen before answers ``dup``, with its answer until its delivery is confirmed (as
    the state script keeps it pending); erasures answer ``erased``. Records what it was
    asked, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.pending: dict[str, ApplyResult | None] = {}

    async def apply(self, deltas: Sequence[bytes], positions: bytes = b"") -> list[ApplyResult]:
        out = []
        for raw in deltas:
            delta = orjson.loads(raw)
            eid = delta["eid"]
            self.calls.append(("apply", eid))
            if delta["erase"]:
                out.append(Erased([f"c-{eid}"]))
            elif eid in self.pending:
                out.append(Duplicate(f"c-{eid}", replay=self.pending[eid]))
            else:
                state = {"fields": {"m:version": "1", "c:events_total": "1"}, "ids": []}
                old: dict[str, str | None] = {"m:version": None, "c:events_total": None}
                answer = Applied(f"c-{eid}", state=state, old=old)  # type: ignore[arg-type]
                self.pending[eid] = answer
                out.append(answer)
        return out

    async def confirm_delivered(self, applied: Sequence[tuple[str, str]]) -> None:
        self.calls.append(("confirm", list(applied)))
        for _, eid in applied:
            self.pending[eid] = None

    async def record_contacts(self, contacts: Sequence[Contact], ttl_seconds: int) -> None:
        """Contacts are no output: not part of the delivery order checked here."""

    async def population(self) -> dict[str, int]:
        return {}

    async def product_stats(self) -> dict[str, str]:
        return {}


def _pipeline(store: FakeStore) -> BatchPipeline:
    outputs = Outputs(SETTINGS, DocumentSettings(), PromptTemplates.load())
    reading = ChunkReading(FakeRunner(), reads_images=False)
    return BatchPipeline(SETTINGS, store, reading, Scorer(None), outputs)  # type: ignore[arg-type]


def _events(n: int) -> list[dict[str, Any]]:
    phones = [f"1390000{i:04d}" for i in range(n)]
    return [
        chan(f"e{i}", "2026-11-01T09:00:00Z", "app", {"phone": p}) for i, p in enumerate(phones)
    ]


def test_outputs_are_delivered_before_they_are_confirmed_and_retried_until_they_are() -> None:
    store, sink = FakeStore(), ListSink(failures=2)
    outcome = asyncio.run(_pipeline(store).run(input_records("t.ch", _events(3)), sink.deliver))
    assert [e["source_event_id"] for e in sink.events()] == ["e0", "e1", "e2"]
    # three attempts applied the batch (the store answers dup, with the pending answer,
    # after the first); only the delivered attempt is confirmed, once, after delivery
    confirms = [call for call in store.calls if call[0] == "confirm"]
    assert confirms == [("confirm", [("c-e0", "e0"), ("c-e1", "e1"), ("c-e2", "e2")])]
    assert store.calls[-1][0] == "confirm"
    # counted as the delivered attempt saw them: its store answers were redeliveries
    assert outcome.outcomes == {("t.ch", "duplicate"): 3}


def test_chunks_apply_in_order_and_a_repeat_in_the_batch_emits_nothing_new() -> None:
    events = _events(3)
    store, sink = FakeStore(), ListSink()
    batch = input_records("t.ch", [*events, events[0]])
    outcome = asyncio.run(_pipeline(store).run(batch, sink.deliver))
    applied = [eid for kind, eid in store.calls if kind == "apply"]
    assert applied == ["e0", "e1", "e2", "e0"]  # two chunks of two, in order
    assert [e["source_event_id"] for e in sink.events()] == ["e0", "e1", "e2"]
    assert outcome.outcomes == {("t.ch", "ok"): 3, ("t.ch", "duplicate"): 1}


def test_bad_records_and_erasures_become_their_outputs() -> None:
    erase = event("x1", "customer.erasure", "2026-11-01T09:00:00Z", "crm", {"phone": "1"}, {})
    store, sink = FakeStore(), ListSink()
    asyncio.run(_pipeline(store).run(input_records("t.ch", [b"\xff", erase]), sink.deliver))
    kinds = [(e["type"], e.get("customer_id")) for e in sink.events()]
    assert kinds == [("dlq.record", None), ("profile.erased", "c-x1")]
    assert [kind for kind, _ in store.calls] == ["apply", "confirm"]
    assert store.calls[-1] == ("confirm", [("", "x1")])  # the erasure's notices went out
