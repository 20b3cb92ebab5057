"""The state script against a real Redis: identity, merge, idempotency, order independence."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import pytest

from portrait.config import Settings
from portrait.events import INPUT_EVENT_ADAPTER
from processors.emotion import EmotionResult
from processors.identity import customer_id_for
from processors.layout import ACTIONS, KEYWORDS, PROBLEMS, REDIS_SETTINGS, RESOLUTIONS, Family
from processors.profile import DeltaSettings, build_delta
from state.answers import ApplyResult
from streams.lookup import find_customer, get_profile
from tests.support.envelopes import chan, event, settings_env
from tests.support.state import open_store, raw_client

T = TypeVar("T")
DELTAS = DeltaSettings(timezone=ZoneInfo("Asia/Shanghai"))


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def delta(raw: dict[str, Any]) -> bytes:
    parsed = INPUT_EVENT_ADAPTER.validate_python(raw)
    return build_delta(parsed, DELTAS).to_json(now_ms=1_800_000_000_000, retention_ms=86_400_000)


async def apply(settings: Settings, events: list[dict[str, Any]]) -> list[ApplyResult]:
    store = open_store(settings.redis_url, settings.redis_key_prefix)
    try:
        return await store.apply([delta(e) for e in events])
    finally:
        await store.close()


async def profile(settings: Settings, kind: str, value: str) -> dict[str, Any] | None:
    store = open_store(settings.redis_url, settings.redis_key_prefix)
    try:
        return await get_profile(store, kind, value)
    finally:
        await store.close()


def edit(eid: str, at: str, customer: dict[str, Any], **payload: Any) -> dict[str, Any]:
    return event(eid, "profile.edited", at, "crm", customer, {"editor_id": "emp", **payload})


STORY = [
    chan("s1", "2026-11-01T09:00:00+08:00", "app", {"phone": "138"}, city="上海"),
    chan("s2", "2026-11-02T09:00:00+08:00", "web", {"im_id": "wx"}, city="北京"),
    chan("s3", "2026-11-03T21:00:00+08:00", "web", {"im_id": "wx", "email": "a1@x.com"}),
    chan(
        "s4",
        "2026-11-04T21:00:00+08:00",
        "hotline",
        {"phone": "138", "email": "A1@x.com"},
        company="Acme",
    ),
    edit(
        "s5",
        "2026-10-30T09:00:00+08:00",
        {"email": "a1@x.com"},
        set={"city": "杭州"},
        tags_add=["vip", "tmp"],
    ),
    edit("s6", "2026-11-05T09:00:00+08:00", {"phone": "138"}, tags_remove=["tmp"]),
    chan("s7", "2026-11-06T08:00:00+08:00", "app", {"email": "Z@X.com", "phone": "138"}),
]


def test_new_customer_gets_the_deterministic_id(redis_settings: Settings) -> None:
    [result] = run(apply(redis_settings, [STORY[0]]))
    assert result.status == "ok"
    assert result.customer_id == customer_id_for("phone:138")
    doc = run(profile(redis_settings, "phone", "1-3-8"))
    assert doc is not None and doc["stats"]["events_total"] == 1
    assert doc["attributes"]["city"]["value"] == "上海"


def test_duplicate_changes_nothing_and_replays_until_confirmed(redis_settings: Settings) -> None:
    first, again = run(apply(redis_settings, [STORY[0], STORY[0]]))
    assert first.status == "ok" and again.status == "dup"
    assert again.replay is not None and again.replay.state == first.state
    doc = run(profile(redis_settings, "phone", "138"))
    assert doc is not None and doc["version"] == 1 and doc["stats"]["events_total"] == 1

    async def confirm() -> None:
        store = open_store(redis_settings.redis_url, redis_settings.redis_key_prefix)
        await store.confirm_delivered([(first.customer_id or "", "s1")])
        await store.close()

    run(confirm())
    [third] = run(apply(redis_settings, [STORY[0]]))
    assert third.status == "dup" and third.replay is None


def test_a_redelivery_replays_what_was_kept_pending_in_either_form(
    redis_settings: Settings,
) -> None:
    """An answer is kept pending as the answer itself ('ok' RS cid RS body); one kept
    by an earlier version (cid RS body) replays all the same."""
    [first] = run(apply(redis_settings, [STORY[0]]))
    client = raw_client(redis_settings.redis_url)
    pending = f"{redis_settings.redis_key_prefix}c:{{{first.customer_id}}}:pending"
    kept = bytes(client.hget(pending, "s1"))
    assert kept.startswith(b"ok\x1e" + (first.customer_id or "").encode() + b"\x1e")
    [again] = run(apply(redis_settings, [STORY[0]]))
    client.hset(pending, "s1", kept[3:])  # as an earlier version kept it
    [legacy] = run(apply(redis_settings, [STORY[0]]))
    for replayed in (again, legacy):
        assert replayed.status == "dup" and replayed.replay is not None
        assert replayed.replay.state == first.state and replayed.replay.old == first.old
        assert replayed.customer_id == first.customer_id


def test_shared_person_identifier_merges_into_the_earliest_customer(
    redis_settings: Settings,
) -> None:
    results = run(apply(redis_settings, STORY[:4]))
    phone_cid = customer_id_for("phone:138")
    im_cid = customer_id_for("im_id:wx")
    assert results[2].customer_id == im_cid and results[2].merged == []
    assert results[3].status == "ok"
    assert results[3].customer_id == phone_cid  # first seen on 11-01, before wx on 11-02
    assert results[3].merged == [im_cid]
    doc = run(profile(redis_settings, "customer_id", im_cid))  # the loser redirects
    assert doc is not None and doc["customer_id"] == phone_cid
    assert doc["stats"]["events_total"] == 4
    assert doc["stats"]["by_channel"] == {"app": 1, "hotline": 1, "web": 2}
    assert doc["identifiers"]["im_id"] == ["wx"] and doc["identifiers"]["email"] == ["a1@x.com"]
    assert doc["attributes"]["city"]["value"] == "北京"  # the later of the two inferred values
    assert doc["stats"]["first_seen"] == "2026-11-01T01:00:00.000Z"
    assert run(profile(redis_settings, "email", "a1@x.com")) == doc
    client = raw_client(redis_settings.redis_url)
    assert not client.keys(f"{redis_settings.redis_key_prefix}c:{{{im_cid}}}:p")


def test_manual_values_win_until_a_later_manual_edit(redis_settings: Settings) -> None:
    run(apply(redis_settings, STORY[:5]))
    doc = run(profile(redis_settings, "phone", "138"))
    assert doc is not None
    assert doc["attributes"]["city"] == {
        "value": "杭州",
        "source": "manual",
        "confidence": 1.0,
        "updated_at": "2026-10-30T01:00:00.000Z",
    }
    later = edit("m2", "2026-11-09T09:00:00+08:00", {"phone": "138"}, set={"city": "苏州"})
    newer_inferred = chan("m3", "2026-12-01T09:00:00+08:00", "app", {"phone": "138"}, city="x")
    run(apply(redis_settings, [later, newer_inferred]))
    doc = run(profile(redis_settings, "phone", "138"))
    assert doc is not None and doc["attributes"]["city"]["value"] == "苏州"


def content(doc: dict[str, Any] | None) -> dict[str, Any]:
    assert doc is not None
    return {k: v for k, v in doc.items() if k != "customer_id"}


def test_any_order_gives_the_same_profile(redis_url: str, unique: str) -> None:
    reference = None
    rng = random.Random(7)
    for attempt in range(8):
        order = STORY[:]
        rng.shuffle(order)
        settings = Settings(redis_url=redis_url, redis_key_prefix=f"o{unique}{attempt}:")
        run(apply(settings, order))
        found = content(run(profile(settings, "email", "z@x.com")))
        assert found["tags"] == ["vip"]
        assert found["stats"]["events_total"] == len(STORY)
        assert found["version"] == len(STORY)  # merges add the loser's changes
        if reference is None:
            reference = found
        assert found == reference, f"order {[e['event_id'] for e in order]}"
        for kind, value in (("phone", "138"), ("im_id", "wx"), ("email", "a1@x.com")):
            assert content(run(profile(settings, kind, value))) == reference


def test_same_order_gives_the_same_ids(redis_url: str, unique: str) -> None:
    ids = []
    for attempt in range(2):
        settings = Settings(redis_url=redis_url, redis_key_prefix=f"i{unique}{attempt}:")
        ids.append([r.customer_id for r in run(apply(settings, STORY))])
    assert ids[0] == ids[1]


def test_erasure_removes_every_trace(redis_settings: Settings) -> None:
    run(apply(redis_settings, STORY))
    cid = customer_id_for("phone:138")
    erase = event("x1", "customer.erasure", "2026-11-10T00:00:00Z", "crm", {"im_id": "wx"}, {})
    [result] = run(apply(redis_settings, [erase]))
    assert result.status == "erased" and result.erased == [cid]

    async def delivered() -> None:  # the notices went out: the erasure forgets the id
        store = open_store(redis_settings.redis_url, redis_settings.redis_key_prefix)
        await store.confirm_delivered([("", "x1")])
        await store.close()

    run(delivered())
    client = raw_client(redis_settings.redis_url)
    leftovers = []
    for key in client.scan_iter(f"{redis_settings.redis_key_prefix}*"):
        blob = key + repr(client.dump(key)).encode()
        if any(s in blob for s in (cid.encode(), b"138", b"wx", b"z@x.com", b"A1")):
            leftovers.append(key)
    assert leftovers == []
    [again] = run(apply(redis_settings, [erase]))
    assert again.status == "dup" and again.replay is None
    # an event from before the erasure stays out; one after it starts a new profile
    late, fresh = run(
        apply(
            redis_settings,
            [STORY[0], chan("x2", "2026-11-11T09:00:00+08:00", "app", {"phone": "138"})],
        )
    )
    assert late.status == "suppressed" and fresh.status == "ok"
    doc = run(profile(redis_settings, "phone", "138"))
    assert doc is not None and doc["stats"]["events_total"] == 1
    assert "city" not in doc["attributes"]


def test_scripts_are_reloaded_when_redis_forgets_them(redis_settings: Settings) -> None:
    async def scenario() -> list[str]:
        store = open_store(redis_settings.redis_url, redis_settings.redis_key_prefix)
        first = await store.apply([delta(STORY[0])])
        await store.redis.script_flush()  # what a restart without persistence leaves
        await store.redis.function_flush()
        second = await store.apply([delta(STORY[1])])
        await store.confirm_delivered([(second[0].customer_id or "", "s2")])
        await store.redis.script_flush()
        await store.redis.function_flush()
        third = await store.apply([delta(STORY[1])])
        await store.close()
        return [first[0].status, second[0].status, third[0].status, str(third[0].replay)]

    # the confirmation ran (the ack script reloaded too): the redelivery replays nothing
    assert run(scenario()) == ["ok", "ok", "dup", "None"]


def test_unknown_identifier_finds_nothing(redis_settings: Settings) -> None:
    async def lookup() -> str | None:
        store = open_store(redis_settings.redis_url, redis_settings.redis_key_prefix)
        try:
            return await find_customer(store, "phone", "000")
        finally:
            await store.close()

    assert run(lookup()) is None


def test_a_script_error_fails_only_its_own_event(redis_settings: Settings) -> None:
    async def scenario() -> list[ApplyResult]:
        store = open_store(redis_settings.redis_url, redis_settings.redis_key_prefix)
        try:
            return await store.apply([delta(STORY[0]), b"{not a delta", delta(STORY[1])])
        finally:
            await store.close()

    first, broken, last = run(scenario())
    assert (first.status, broken.status, last.status) == ("ok", "error", "ok")
    assert broken.error == "malformed_delta"


def emotional(eid: str, at: str, label: str) -> bytes:
    scores = {"negative": 0.1, "neutral": 0.1, "positive": 0.1}
    scores[label] = 0.8
    result = EmotionResult(label, scores, None, None)
    raw = event(
        eid,
        "chat.message",
        at,
        "wecom",
        {"im_id": "moody"},
        {"conversation_id": "c", "direction": "inbound", "employee_id": "e", "text": "..."},
    )
    parsed = INPUT_EVENT_ADAPTER.validate_python(raw)
    return build_delta(parsed, DELTAS, result).to_json(1_800_000_000_000, 86_400_000)


MOOD = [  # by occurred_at: neg, neg, pos, neg, neg  → streak 2, last negative
    ("m1", "2026-11-01T09:00:00Z", "negative"),
    ("m2", "2026-11-01T09:01:00Z", "negative"),
    ("m3", "2026-11-01T09:02:00Z", "positive"),
    ("m4", "2026-11-01T09:03:00Z", "negative"),
    ("m5", "2026-11-01T09:04:00Z", "negative"),
]


def test_emotion_is_the_same_in_any_arrival_order(redis_url: str, unique: str) -> None:
    seen = []
    for attempt, order in enumerate([MOOD, MOOD[::-1], [MOOD[2], *MOOD[:2], *MOOD[3:]]]):
        settings = Settings(redis_url=redis_url, redis_key_prefix=f"e{unique}{attempt}:")

        async def go(settings: Settings = settings, order: list[tuple[str, str, str]] = order):
            store = open_store(settings.redis_url, settings.redis_key_prefix)
            try:
                await store.apply([emotional(*row) for row in order])
            finally:
                await store.close()

        run(go())
        doc = run(profile(settings, "im_id", "moody"))
        assert doc is not None
        seen.append(doc["emotion"])
    assert seen[0] == seen[1] == seen[2]
    assert seen[0]["last"] == "negative" and seen[0]["negative_streak"] == 2
    assert -1 < seen[0]["average"] < 0


def family_members(settings: Settings, customer: str, family: Family) -> list[bytes]:
    """A family's stored members for a customer (names, or "name US value")."""
    client = raw_client(settings.redis_url)
    key = f"{settings.redis_key_prefix}c:{{{customer_id_for(customer)}}}:{family.key}"
    return [bytes(m) for m in client.zrange(key, 0, -1)]


def test_the_action_trail_keeps_the_newest_fifty_in_any_order(redis_url: str, unique: str) -> None:
    messages = [
        event(
            f"t{i:03d}",
            "chat.message",
            f"2026-11-01T{i // 60:02d}:{i % 60:02d}:00Z",
            "wecom",
            {"im_id": "chatty"},
            {"conversation_id": "c", "direction": "inbound", "employee_id": f"e{i % 3}"},
        )
        for i in range(130)
    ]
    trails = []
    for attempt, order in enumerate([messages, messages[::-1]]):
        settings = Settings(redis_url=redis_url, redis_key_prefix=f"y{unique}{attempt}:")
        for start in range(0, len(order), 40):
            run(apply(settings, order[start : start + 40]))
        doc = run(profile(settings, "im_id", "chatty"))
        assert doc is not None
        trails.append(doc["actions"])
    assert trails[0] == trails[1]
    assert len(trails[0]) == ACTIONS.shown == 50
    assert trails[0][0]["occurred_at"] == "2026-11-01T02:09:00.000Z"  # message 129
    kept = [
        family_members(
            Settings(redis_url=redis_url, redis_key_prefix=f"y{unique}{attempt}:"),
            "im_id:chatty",
            ACTIONS,
        )
        for attempt in range(2)
    ]
    assert kept[0] == kept[1] and len(kept[0]) == ACTIONS.kept
    assert min(kept[0]).startswith(str(1793491200000 + 80 * 60_000).zfill(15).encode())


def spend(eid: str, customer: dict[str, Any], amount: float) -> dict[str, Any]:
    return event(
        eid,
        "channel.event",
        "2026-11-01T09:00:00Z",
        "app",
        customer,
        {"action": "purchase", "amount": amount},
    )


def test_spend_population_follows_changes_merges_and_erasures(
    redis_settings: Settings,
) -> None:
    run(
        apply(
            redis_settings,
            [
                spend("s1", {"im_id": "low"}, 10.0),
                spend("s2", {"im_id": "mid"}, 100.0),
                spend("s3", {"im_id": "high"}, 1000.0),
                spend("s4", {"im_id": "high"}, 1000.0),  # high now spends 2000
            ],
        )
    )

    async def population() -> dict[str, int]:
        store = open_store(redis_settings.redis_url, redis_settings.redis_key_prefix)
        try:
            return {k: v for k, v in (await store.population()).items() if v}
        finally:
            await store.close()

    assert sum(run(population()).values()) == 3
    wealth = {
        name: run(profile(redis_settings, "im_id", name))["indicators"]["wealth"]  # type: ignore[index]
        for name in ("low", "mid", "high")
    }
    assert wealth["low"] < wealth["mid"] < wealth["high"]
    assert wealth["high"] == pytest.approx(5 / 6, abs=1e-4)

    run(apply(redis_settings, [spend("s5", {"im_id": ["low", "mid"]}, 0.0)]))  # merge
    assert sum(run(population()).values()) == 2
    erase = event("s6", "customer.erasure", "2026-11-02T00:00:00Z", "crm", {"im_id": "high"}, {})
    run(apply(redis_settings, [erase]))
    assert sum(run(population()).values()) == 1


def test_feedback_counts_offers_once_per_event(redis_settings: Settings) -> None:
    def feedback(eid: str, outcome: str) -> dict[str, Any]:
        return event(
            eid,
            "feedback.recorded",
            "2026-11-01T09:00:00Z",
            "hotline",
            {"phone": "555"},
            {"call_id": "c1", "phase": "proposal", "product": "solar", "outcome": outcome},
        )

    first = [feedback("f1", "accepted"), feedback("f2", "declined"), feedback("f1", "accepted")]
    run(apply(redis_settings, first))
    run(apply(redis_settings, [feedback("f2", "declined")]))  # redelivered later

    env = settings_env(redis_settings)
    done = subprocess.run(
        [sys.executable, "-m", "cli", "products", "--json"],
        env=env,
        capture_output=True,
        check=True,
        timeout=60,
    )
    assert json.loads(done.stdout) == [
        {"phase": "proposal", "product": "solar", "offers": 2, "accepted": 1, "rate": 0.5}
    ]


def said(eid: str, minute: int, keywords: list[str], intent: str | None = None) -> bytes:
    """An inbound chat message's delta with the keywords and intent its reading found."""
    raw = event(
        eid,
        "chat.message",
        f"2026-11-0{1 + minute // 1440}T{minute % 1440 // 60:02d}:{minute % 60:02d}:00Z",
        "wecom",
        {"im_id": "talker"},
        {"conversation_id": "c", "direction": "inbound", "employee_id": "e", "text": "……"},
    )
    parsed = INPUT_EVENT_ADAPTER.validate_python(raw)
    built = build_delta(parsed, DELTAS, keywords=keywords, intent=intent)
    return built.to_json(1_800_000_000_000, 86_400_000)


def rated(eid: str, minute: int) -> bytes:
    """A feedback with a satisfaction score: a problem resolution."""
    raw = event(
        eid,
        "feedback.recorded",
        f"2026-11-0{1 + minute // 1440}T{minute % 1440 // 60:02d}:{minute % 60:02d}:00Z",
        "crm",
        {"im_id": "talker"},
        {"satisfaction": 4},
    )
    return build_delta(INPUT_EVENT_ADAPTER.validate_python(raw), DELTAS).to_json(
        1_800_000_000_000, 86_400_000
    )


def talker_family(settings: Settings, family: Family) -> list[bytes]:
    return family_members(settings, "im_id:talker", family)


def apply_deltas(settings: Settings, deltas: list[bytes]) -> None:
    async def go() -> None:
        store = open_store(settings.redis_url, settings.redis_key_prefix)
        try:
            for start in range(0, len(deltas), 50):
                await store.apply(deltas[start : start + 50])
        finally:
            await store.close()

    run(go())


def test_problems_and_resolutions_keep_the_newest_twenty_in_any_order(
    redis_url: str, unique: str
) -> None:
    deltas = [said(f"pb{i:03d}", 2 * i, [], "complaint") for i in range(70)]
    deltas += [rated(f"rs{i:03d}", 2 * i + 1) for i in range(70)]
    kept = []
    for attempt in range(3):
        random.Random(attempt).shuffle(deltas)
        settings = Settings(redis_url=redis_url, redis_key_prefix=f"pb{unique}{attempt}:")
        apply_deltas(settings, deltas)
        problems = talker_family(settings, PROBLEMS)
        resolutions = talker_family(settings, RESOLUTIONS)
        assert len(problems) == PROBLEMS.kept and len(resolutions) == RESOLUTIONS.kept
        kept.append((problems, resolutions))
        doc = run(profile(settings, "im_id", "talker"))
        assert doc is not None
        newest = doc["problems"][0]
        assert newest["event_id"] == "pb069" and newest["resolution"]["event_id"] == "rs069"
    assert kept[0] == kept[1] == kept[2]
    # the oldest kept problem is number 50 of 70
    assert b"pb050" in min(kept[0][0]) and b"rs050" in min(kept[0][1])


LISTPACK_ENTRIES = "zset-max-listpack-entries"


def test_the_keyword_family_is_indexed_and_the_trail_stays_compact(
    redis_settings: Settings,
) -> None:
    # the servers Portrait starts have the layout's settings (processors/layout.py): a
    # keyword family past 64 terms is a skiplist (a hash look-up per increment, not a
    # scan), the action trail and problems stay listpacks
    apply_deltas(
        redis_settings, [said(f"e{i:03d}", i, [f"a{i:03d}", f"b{i:03d}"]) for i in range(40)]
    )
    client = raw_client(redis_settings.redis_url)
    person = customer_id_for("im_id:talker")

    def encoding(family: Family) -> bytes:
        key = f"{redis_settings.redis_key_prefix}c:{{{person}}}:{family.key}"
        return bytes(client.object("encoding", key))

    assert len(talker_family(redis_settings, KEYWORDS)) == 80
    assert encoding(KEYWORDS) == b"skiplist"
    assert len(talker_family(redis_settings, ACTIONS)) == 40
    assert encoding(ACTIONS) == b"listpack"

    async def untuned() -> tuple[dict[str, str], dict[str, str]]:
        store = open_store(redis_settings.redis_url, redis_settings.redis_key_prefix)
        try:
            tuned = await store.untuned_settings()
            client.config_set("zset-max-listpack-entries", 128)  # a Redis at its defaults
            return tuned, await store.untuned_settings()
        finally:
            client.config_set("zset-max-listpack-entries", REDIS_SETTINGS[LISTPACK_ENTRIES])
            await store.close()

    assert run(untuned()) == ({}, {LISTPACK_ENTRIES: "128"})


def test_a_customer_keeps_the_heaviest_keywords(redis_settings: Settings) -> None:
    # "common" is in every message; each message adds two terms of its own
    deltas = [
        said(f"kw{i:03d}", i, ["common", f"only{i:03d}a", f"only{i:03d}b"]) for i in range(200)
    ]
    apply_deltas(redis_settings, deltas)
    terms = set(talker_family(redis_settings, KEYWORDS))
    assert len(terms) == KEYWORDS.kept
    assert b"common" in terms
    # decayed weights: the newest terms are the heaviest, so the oldest went first; of
    # two terms of equal weight at the edge the larger name goes first
    whole, odd = divmod(KEYWORDS.kept - 1, 2)  # messages kept whole, and half of one more
    edge = 199 - whole
    assert b"only199a" in terms and f"only{edge + 1:03d}b".encode() in terms
    assert (f"only{edge:03d}a".encode() in terms) == bool(odd)
    assert f"only{edge:03d}b".encode() not in terms and b"only000a" not in terms
    doc = run(profile(redis_settings, "im_id", "talker"))
    assert doc is not None and doc["keywords"][0]["term"] == "common"
