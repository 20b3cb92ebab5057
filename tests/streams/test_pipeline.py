"""The batch pipeline with a real Redis and an in-memory sink instead of Kafka."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Any

import orjson
import pytest

from models.registry import ModelRegistry
from portrait.config import Settings
from portrait.events import OUTPUT_MODELS
from state.answers import ApplyResult, Failed
from state.store import RedisProfileStore
from streams.pipeline import BatchPipeline
from streams.records import BatchOutcome
from streams.testing import ListSink, input_records
from tests.support.envelopes import event
from tests.support.pipeline import RunBatch
from tests.support.state import open_store

CHAT = event(
    "p1",
    "chat.message",
    "2026-11-01T10:00:00+08:00",
    "wecom",
    {"im_id": "wx"},
    {"conversation_id": "c1", "direction": "inbound", "employee_id": "emp1"},
)


def test_good_and_bad_records_in_one_batch(redis_settings: Settings, run_batch: RunBatch) -> None:
    sink = ListSink()
    bad = b"\x00\xffnot json"
    outcome = run_batch(
        redis_settings, input_records("t.chat", [orjson.dumps(CHAT), bad, orjson.dumps(CHAT)]), sink
    )
    kinds = [e["type"] for e in sink.events()]
    assert kinds == ["dlq.record", "profile.changed"]  # the duplicate emits nothing new
    dlq = sink.events()[0]
    assert base64.b64decode(dlq["value_b64"]) == bad
    assert (dlq["topic"], dlq["partition"], dlq["offset"]) == ("t.chat", 0, 1)
    assert dlq["reason"].startswith("invalid_utf8")
    assert sink.records[0].topic == redis_settings.topic("dlq")
    assert sink.records[0].key == b"k"
    assert outcome.outcomes == {
        ("t.chat", "ok"): 1,
        ("t.chat", "dlq"): 1,
        ("t.chat", "duplicate"): 1,
    }


def test_outputs_follow_the_contract(redis_settings: Settings, run_batch: RunBatch) -> None:
    sink = ListSink()
    run_batch(redis_settings, input_records("t.chat", [orjson.dumps(CHAT)]), sink)
    [changed] = sink.events()
    OUTPUT_MODELS["profile.changed"].model_validate(changed)
    assert changed["source_event_id"] == "p1" and changed["version"] == 1
    assert sink.records[0].key == changed["customer_id"].encode()
    stats = next(c for c in changed["changed"] if c["field"] == "stats")
    assert stats["old"]["events_total"] == 0 and stats["new"]["events_total"] == 1


def test_failed_delivery_is_retried_with_the_same_outputs(
    redis_settings: Settings, run_batch: RunBatch
) -> None:
    sink = ListSink(failures=2)
    run_batch(redis_settings, input_records("t.chat", [orjson.dumps(CHAT)]), sink)
    [changed] = sink.events()
    assert changed["version"] == 1  # applied once, re-emitted from the pending record
    retry_sink = ListSink()
    run_batch(redis_settings, input_records("t.chat", [orjson.dumps(CHAT)]), retry_sink)
    assert retry_sink.records == []  # confirmed: a later duplicate emits nothing


def test_merge_emits_profile_merged_naming_both(
    redis_settings: Settings, run_batch: RunBatch
) -> None:
    second = event(
        "p2",
        "channel.event",
        "2026-11-02T10:00:00+08:00",
        "app",
        {"phone": "138"},
        {"action": "login"},
    )
    link = event(
        "p3",
        "channel.event",
        "2026-11-03T10:00:00+08:00",
        "web",
        {"phone": "138", "im_id": "wx"},
        {"action": "bill_paid", "amount": 12.5},
    )
    sink = ListSink()
    run_batch(
        redis_settings, input_records("t.ch", [orjson.dumps(e) for e in (CHAT, second, link)]), sink
    )
    merged = [e for e in sink.events() if e["type"] == "profile.merged"]
    assert len(merged) == 1
    OUTPUT_MODELS["profile.merged"].model_validate(merged[0])
    last = sink.events()[-1]
    assert last["type"] == "profile.changed"
    assert merged[0]["customer_id"] == last["customer_id"]
    assert merged[0]["merged_id"] != last["customer_id"]
    stats = next(c for c in last["changed"] if c["field"] == "stats")
    assert stats["new"]["events_total"] == 3


class FlakyStore(RedisProfileStore):
    """Loses its connection on the first update of every batch it is given."""

    failures = 1

    async def apply(self, deltas: Sequence[bytes], positions: bytes = b"") -> list[ApplyResult]:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("redis went away")
        return await super().apply(deltas)


@pytest.mark.standalone  # its flaky store is the standalone one
def test_a_lost_redis_connection_retries_the_batch(redis_settings: Settings) -> None:
    async def go() -> ListSink:
        store = FlakyStore(redis_settings.redis_url, redis_settings.redis_key_prefix)
        sink = ListSink()
        try:
            await BatchPipeline.for_settings(redis_settings, store).run(
                input_records("t.chat", [orjson.dumps(CHAT)]), sink.deliver
            )
        finally:
            await store.close()
        return sink

    sink = asyncio.run(go())
    assert [e["type"] for e in sink.events()] == ["profile.changed"]


def refusing_store(url: str, prefix: str) -> RedisProfileStore:
    """A store whose script fails on every event's data (the cluster store under
    ``make test-cluster``: a standalone client's reads would meet MOVED on a cluster)."""
    store = open_store(url, prefix)

    async def refuse(deltas: Sequence[bytes], positions: bytes = b"") -> list[ApplyResult]:
        return [Failed("ResponseError") for _ in deltas]

    store.apply = refuse  # type: ignore[method-assign]
    return store


def test_an_event_the_state_script_rejects_goes_to_the_dlq(redis_settings: Settings) -> None:
    async def go() -> tuple[ListSink, BatchOutcome]:
        store = refusing_store(redis_settings.redis_url, redis_settings.redis_key_prefix)
        sink = ListSink()
        try:
            outcome = await BatchPipeline.for_settings(redis_settings, store).run(
                input_records("t.chat", [orjson.dumps(CHAT)]), sink.deliver
            )
        finally:
            await store.close()
        return sink, outcome

    sink, outcome = asyncio.run(go())
    [dlq] = sink.events()
    assert dlq["type"] == "dlq.record" and dlq["reason"] == "state_error: ResponseError"
    assert base64.b64decode(dlq["value_b64"]) == orjson.dumps(CHAT)
    assert outcome.outcomes == {("t.chat", "dlq"): 1}


def test_feedback_feeds_a_learning_round_and_the_registry(redis_settings: Settings) -> None:
    settings = redis_settings.model_copy(update={"learn_every": 5})

    def feedback(n: int) -> bytes:
        return orjson.dumps(
            event(
                f"fb{n}",
                "feedback.recorded",
                f"2026-11-0{n + 1}T10:00:00Z",
                "hotline",
                {"phone": f"1390000000{n}"},
                {"call_id": f"call{n}", "satisfaction": 1 + n % 5, "outcome": "accepted"},
            )
        )

    async def go() -> tuple[BatchPipeline, str | None]:
        store = open_store(settings.redis_url, settings.redis_key_prefix)
        registry = ModelRegistry(store.redis, settings.redis_key_prefix)
        pipeline = BatchPipeline.for_settings(settings, store, registry)
        try:
            await pipeline.run(
                input_records("t.commands", [feedback(n) for n in range(5)]), ListSink().deliver
            )
            return pipeline, await registry.current()
        finally:
            await store.close()

    pipeline, current = asyncio.run(go())
    scorer = pipeline.scorer
    assert scorer.learner is not None and scorer.learner.rounds == 1
    assert not scorer.learner.ready  # the examples were used
    if current is not None:  # accepted: every worker now scores with the new version
        assert scorer.model is not None
        assert current == scorer.model.version and current.endswith("+1")


def relation(eid: str, at: str, action: str) -> dict[str, Any]:
    return event(
        eid,
        "relation.changed",
        at,
        "wecom",
        {"im_id": "wx"},
        {"employee_id": "emp-7", "relation": "friend", "action": action},
    )


def test_a_new_friend_gets_a_snapshot_and_later_changes_notify_them(
    redis_settings: Settings,
    run_batch: RunBatch,
) -> None:
    later_chat = {**CHAT, "event_id": "p9", "occurred_at": "2026-11-02T10:00:00+08:00"}
    sink = ListSink()
    run_batch(
        redis_settings,
        input_records(
            "t.chat",
            [
                orjson.dumps(relation("r1", "2026-11-01T09:00:00+08:00", "added")),
                orjson.dumps(later_chat),
            ],
        ),
        sink,
    )
    added, snapshot, chatted = sink.events()  # the snapshot follows its profile.changed
    OUTPUT_MODELS["profile.snapshot"].model_validate(snapshot)
    assert snapshot["type"] == "profile.snapshot" and snapshot["employee_id"] == "emp-7"
    assert snapshot["profile"]["relationships"][0]["employee_id"] == "emp-7"
    assert added["notify"] == ["emp-7"] and chatted["notify"] == ["emp-7"]
    closeness = next(c for c in chatted["changed"] if c["field"] == "relationships")
    assert {r["employee_id"] for r in closeness["new"]} == {"emp-7", "emp1"}

    removal = ListSink()
    run_batch(
        redis_settings,
        input_records(
            "t.chat",
            [
                orjson.dumps(relation("r2", "2026-11-03T09:00:00+08:00", "removed")),
                # an "added" that happened before the removal arrives late: it must not win
                orjson.dumps(relation("r0", "2026-10-30T09:00:00+08:00", "added")),
            ],
        ),
        removal,
    )
    removed, late = removal.events()[0], removal.events()[-1]
    assert removed["notify"] == [] and late["notify"] == []
