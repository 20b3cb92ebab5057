"""Erasure suppression against a real Redis (docs/design.md "Erasure"): erased identifiers are
kept only as keyed hashes with the erasure time; an erased person's events from before
the erasure never bring them back, whatever the arrival order; a later event starts a
new profile."""

from __future__ import annotations

import random
from typing import Any
from zoneinfo import ZoneInfo

from portrait.config import Settings
from processors.erasure import ErasureHasher
from processors.profile import DeltaSettings
from state.answers import ApplyResult
from tests.support.envelopes import chan, chat, event
from tests.support.state import apply_events, profile_of, raw_client

HASHER = ErasureHasher(b"test-key")
DELTAS = DeltaSettings(timezone=ZoneInfo("Asia/Shanghai"), hasher=HASHER)

PERSON = [
    chan("p1", "2026-11-01T09:00:00+08:00", "app", {"phone": "13912345678"}, name="王五"),
    chat("p2", "2026-11-02T09:00:00+08:00", {"im_id": "wx-5", "phone": "13912345678"}, "你好"),
    chat("p3", "2026-11-03T09:00:00+08:00", {"im_id": "wx-5"}, "我的账单有问题"),
    chan("p4", "2026-11-04T09:00:00+08:00", "web", {"email": "w5@corp.cn", "im_id": "wx-5"}),
]
ERASURE = event(
    "p-erase", "customer.erasure", "2026-11-10T00:00:00Z", "crm", {"phone": "13912345678"}, {}
)
LATE = chan("p5", "2026-11-05T09:00:00+08:00", "web", {"email": "w5@corp.cn"}, city="上海")
BACK = chan("p6", "2026-11-20T09:00:00+08:00", "app", {"phone": "+86 139 1234 5678"})


def apply(settings: Settings, events: list[dict[str, Any]]) -> list[ApplyResult]:
    return apply_events(settings, events, DELTAS)


def profile(settings: Settings, kind: str, value: str) -> dict[str, Any] | None:
    return profile_of(settings, kind, value)


def traces(settings: Settings) -> list[bytes]:
    """Keys of the namespace whose name or content holds a value of the person."""
    client = raw_client(settings.redis_url)
    found = []
    for key in client.scan_iter(f"{settings.redis_key_prefix}*"):
        blob = key + repr(client.dump(key)).encode()
        if any(v in blob for v in (b"13912345678", b"wx-5", b"w5@corp.cn", "王五".encode())):
            found.append(key)
    return found


def test_late_events_of_an_erased_person_are_dropped(redis_settings: Settings) -> None:
    apply(redis_settings, PERSON)
    [erased] = apply(redis_settings, [ERASURE])
    assert erased.status == "erased" and len(erased.erased) == 1
    # a late event with an identifier the erasure did not name, and a redelivery
    late, again = apply(redis_settings, [LATE, PERSON[1]])
    assert late.status == "suppressed" and again.status == "suppressed"
    assert profile(redis_settings, "email", "w5@corp.cn") is None
    assert traces(redis_settings) == []
    # suppression entries are keyed hashes with the erasure time, and expire
    client = raw_client(redis_settings.redis_url)
    entries = list(client.scan_iter(f"{redis_settings.redis_key_prefix}sup:*"))
    assert len(entries) == 3 and all(client.pttl(k) > 0 for k in entries)
    assert {client.get(k) for k in entries} == {b"1794268800000"}


def test_a_person_who_comes_back_after_the_erasure_starts_a_new_profile(
    redis_settings: Settings,
) -> None:
    [*_, erased] = apply(redis_settings, [*PERSON, ERASURE])
    [back] = apply(redis_settings, [BACK])
    assert back.status == "ok" and back.merged == [] and erased.status == "erased"
    doc = profile(redis_settings, "phone", "13912345678")
    assert doc is not None and doc["stats"]["events_total"] == 1
    assert "name" not in doc["attributes"]
    # a late event from before the erasure still brings nothing back, nor erases the new one
    [late] = apply(redis_settings, [PERSON[1]])
    assert late.status == "suppressed" and late.erased == []
    doc = profile(redis_settings, "phone", "13912345678")
    assert doc is not None and doc["stats"]["events_total"] == 1


def test_an_erasure_redelivered_answers_what_it_erased(redis_settings: Settings) -> None:
    [*_, first] = apply(redis_settings, [*PERSON, ERASURE])
    [again] = apply(redis_settings, [ERASURE])
    assert again.status == "dup" and again.replay is not None
    assert again.replay.status == "erased" and again.replay.erased == first.erased


def test_no_trace_in_any_order_even_when_the_erasure_comes_first(
    redis_settings: Settings,
) -> None:
    story = [*PERSON, LATE, ERASURE]
    for seed in range(8):
        shuffled = story[:]
        random.Random(seed).shuffle(shuffled)
        prefix = f"{redis_settings.redis_key_prefix}e{seed}:"
        settings = redis_settings.model_copy(update={"redis_key_prefix": prefix})
        apply(settings, shuffled)
        apply(settings, shuffled[:2])  # redeliveries
        assert traces(settings) == [], f"order {[e['event_id'] for e in shuffled]}"
