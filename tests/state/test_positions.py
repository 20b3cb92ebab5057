"""Input positions kept with the state (streams/offsets.py), against a real Redis: the
script applies nothing when Redis is not where the worker expects it, and a claim
starts each partition from the lower of Kafka's committed offset and Redis's position."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import pytest

from portrait.config import Settings
from portrait.events import INPUT_EVENT_ADAPTER
from processors.profile import DeltaSettings, build_delta
from state.answers import StaleOffsets
from state.store import RedisProfileStore
from streams.offsets import Ledger
from streams.records import InputRecord
from tests.support.envelopes import chan
from tests.support.state import with_store

DELTAS = DeltaSettings(timezone=ZoneInfo("Asia/Shanghai"))


def _delta(raw: dict[str, Any]) -> bytes:
    event = INPUT_EVENT_ADAPTER.validate_python(raw)
    return build_delta(event, DELTAS).to_json(now_ms=1_800_000_000_000, retention_ms=86_400_000)


def _records(partition: int, offsets: range) -> list[InputRecord]:
    return [InputRecord("t.chat", partition, o, None, b"") for o in offsets]


def _event(i: int) -> dict[str, Any]:
    return chan(f"pos-{i}", "2026-11-01T09:00:00+08:00", "app", {"account_no": f"P{i}"})


def test_a_claim_starts_from_the_lower_of_kafka_and_redis(redis_settings: Settings) -> None:
    ledger = Ledger(redis_settings.redis_key_prefix, "g")

    async def go(store: RedisProfileStore) -> tuple[dict[Any, int], dict[str, str]]:
        positions = {"t.chat|0": "3:40", "t.chat|1": "3:90", "t.chat|3": "3:30"}
        await store.set_positions(ledger.key, positions)
        committed = {("t.chat", 0): 55, ("t.chat", 1): 80, ("t.chat", 2): None, ("t.chat", 3): None}
        seek = await ledger.claim(store, committed, 4)
        return seek, await store.positions(ledger.key)

    seek, stored = with_store(redis_settings, go)
    # Redis lost writes on partition 0: start from 40; partition 1 was applied past the
    # commit but maybe not delivered: Kafka's 80; partition 2 is new to both; partition
    # 3 was applied but nothing committed: from the earliest record, as Kafka would
    assert seek == {("t.chat", 0): 40}
    assert ledger.done == {
        ("t.chat", 0): 40,
        ("t.chat", 1): 80,
        ("t.chat", 2): -1,
        ("t.chat", 3): -1,
    }
    assert stored == {
        "t.chat|0": "4:40",
        "t.chat|1": "4:80",
        "t.chat|2": "4:-1",
        "t.chat|3": "4:-1",
    }


def test_positions_advance_with_the_state_and_a_lost_write_stops_the_script(
    redis_settings: Settings,
) -> None:
    ledger = Ledger(redis_settings.redis_key_prefix, "g")

    async def go(store: RedisProfileStore) -> tuple[str, str, StaleOffsets | None]:
        await ledger.claim(store, {("t.chat", 0): 10}, 1)
        records = _records(0, range(10, 13))
        (plan,) = ledger.plan([records])
        await store.apply([_delta(_event(i)) for i in range(3)], plan)
        ledger.advance(records)
        after = (await store.positions(ledger.key))["t.chat|0"]
        # Redis "loses" the last write: its position goes back
        await store.set_positions(ledger.key, {"t.chat|0": "1:10"})
        (next_plan,) = ledger.plan([_records(0, range(13, 15))])
        try:
            await store.apply([_delta(_event(9))], next_plan)
        except StaleOffsets as stale:
            return after, (await store.positions(ledger.key))["t.chat|0"], stale
        return after, "", None

    after, later, stale = with_store(redis_settings, go)
    assert after == "1:13"
    assert stale is not None and not stale.fenced and stale.partition == "t.chat|0"
    assert later == "1:10"  # nothing applied, the position untouched
    assert with_store(redis_settings, lambda store: store.load_account("P9")) is None


def test_a_newer_generation_fences_an_older_one_and_a_retry_passes(
    redis_settings: Settings,
) -> None:
    old, new = (
        Ledger(redis_settings.redis_key_prefix, "g"),
        Ledger(redis_settings.redis_key_prefix, "g"),
    )

    async def go(store: RedisProfileStore) -> tuple[bool, list[str]]:
        await old.claim(store, {("t.chat", 0): 0}, 1)
        batch = _records(0, range(0, 4))
        plan_a, plan_b = old.plan([batch[:2], batch[2:]])
        await store.apply([_delta(_event(20))], plan_a)
        # the batch fails after its first chunk and is retried from the start: this
        # generation's position is past what the retry expects, which is allowed
        plan_a, plan_b = old.plan([batch[:2], batch[2:]])
        statuses = [r.status for r in await store.apply([_delta(_event(20))], plan_a)]
        statuses += [r.status for r in await store.apply([_delta(_event(21))], plan_b)]
        old.advance(batch)
        await new.claim(store, {("t.chat", 0): 4}, 2)  # another worker takes over
        with pytest.raises(StaleOffsets) as zombie:
            await store.apply([_delta(_event(22))], old.plan([_records(0, range(4, 5))])[0])
        return zombie.value.fenced, statuses

    fenced, statuses = with_store(redis_settings, go)
    assert fenced
    assert statuses == ["dup", "acct"]  # the retried chunk is a duplicate, the next applies


def test_a_rewind_lowers_the_failed_batchs_partitions_to_what_was_delivered(
    redis_settings: Settings,
) -> None:
    ledger = Ledger(redis_settings.redis_key_prefix, "g")

    async def go(store: RedisProfileStore) -> dict[str, str]:
        await ledger.claim(store, {("t.chat", 0): 0, ("t.chat", 1): 0}, 1)
        batch = [*_records(0, range(0, 3)), *_records(1, range(0, 3))]
        first, _second = ledger.plan([batch[:3], batch[3:]])
        await store.apply([_delta(_event(30))], first)  # partition 0 applied to 3
        await store.set_positions(ledger.key, {"t.chat|1": "0:0"})  # partition 1 lost
        stale = StaleOffsets("t.chat|1", "0:0", "1:0")
        await ledger.rewind(store, batch, stale)
        return await store.positions(ledger.key)

    stored = with_store(redis_settings, go)
    assert ledger.rewinding
    # partition 0 goes back to 0 (its applied events' outputs were never delivered);
    # partition 1 stays where Redis lost it to
    assert stored == {"t.chat|0": "1:0", "t.chat|1": "0:0"}


def test_the_watch_finds_positions_behind_what_was_acknowledged() -> None:
    ledger = Ledger("p:", "g")
    ledger.generation, ledger.done = 5, {("t.chat", 0): 40, ("t.chat", 1): 7, ("t.chat", 2): -1}
    assert ledger.lost({"t.chat|0": "5:41", "t.chat|1": "5:7", "t.chat|2": "5:-1"}) == []
    # applied past the acknowledgement, or a newer generation's: no loss
    assert ledger.lost({"t.chat|0": "6:0", "t.chat|1": "5:9", "t.chat|2": "5:3"}) == []
    assert ledger.lost({"t.chat|0": "5:39", "t.chat|1": "4:90", "t.chat|2": "5:-1"}) == [
        "t.chat|0",
        "t.chat|1",
    ]
    assert ledger.lost({}) == ["t.chat|0", "t.chat|1", "t.chat|2"]  # Redis lost everything


def test_a_commit_redis_has_no_position_for_starts_from_the_first_offset(
    redis_settings: Settings,
) -> None:
    """Redis lost everything (an AOF cut back past the ledger, a new empty Redis):
    whatever Kafka committed, the partitions are read again from their first record
    (the state is idempotent), so nothing acknowledged before is lost."""
    ledger = Ledger(redis_settings.redis_key_prefix, "g-wiped")

    async def go(store: RedisProfileStore) -> tuple[dict[Any, int], dict[str, str]]:
        seek = await ledger.claim(store, {("t.cmd", 0): 12, ("t.cmd", 1): None}, 2)
        return seek, await store.positions(ledger.key)

    seek, stored = with_store(redis_settings, go)
    assert seek == {("t.cmd", 0): 0}
    assert stored == {"t.cmd|0": "2:0", "t.cmd|1": "2:-1"}


def test_a_partition_claimed_before_anything_was_applied_starts_from_its_first_offset(
    redis_settings: Settings,
) -> None:
    """Redis lost everything applied on a partition since its claim: whatever Kafka
    committed, the partition starts again from its first record."""
    ledger = Ledger(redis_settings.redis_key_prefix, "g-first")

    async def go(store: RedisProfileStore) -> dict[Any, int]:
        await ledger.claim(store, {("t.cmd", 0): None}, 0)  # fresh: nothing known
        return await ledger.claim(store, {("t.cmd", 0): 3}, 1)  # Kafka committed 3

    assert with_store(redis_settings, go) == {("t.cmd", 0): 0}
