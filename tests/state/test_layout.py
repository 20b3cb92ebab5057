"""The state layout: Python and the state script agree, answers carry what the document
needs, and every family keeps the same content in any arrival or merge order."""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from importlib.resources import files
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import redis

from portrait.config import Settings
from portrait.events import INPUT_EVENT_ADAPTER
from processors.assist import PromptTemplates
from processors.document import (
    FIELD_BUILDERS,
    DocumentSettings,
    changed_fields,
    document_from_state,
    update_of,
)
from processors.emotion import EmotionResult
from processors.erasure import ErasureHasher
from processors.identity import customer_id_for
from processors.layout import (
    ACCOUNT_ENTITY,
    CALL_KEY,
    CALM,
    CUSTOMER_KEYS,
    ENTITY_KEYS,
    FAMILIES,
    NEGATIVE_STREAK,
    PROFILE_FIELDS,
    ROLE,
    SEEN,
    SEEN_BUCKETS,
    SEEN_HASH_BYTES,
    SEEN_LEGACY,
    STATUSES,
    STORE_KEYS,
    lua_constants,
)
from processors.needs import load_rules
from processors.profile import DeltaSettings, build_delta
from state.answers import ApplyResult
from state.store import RedisProfileStore, _lua
from streams.lookup import find_customer
from streams.outputs import AppliedEvent, Outputs
from streams.records import InputRecord
from tests.support.envelopes import event
from tests.support.state import open_store, raw_client

DELTAS = DeltaSettings(timezone=ZoneInfo("Asia/Shanghai"))
DOCUMENT = DocumentSettings(needs_rules=load_rules())
NOW_MS, RETENTION_MS = 1_800_000_000_000, 86_400_000


def test_the_script_takes_every_layout_name_from_python() -> None:
    raw = files("state").joinpath("apply_event.lua").read_text(encoding="utf-8")
    code = "\n".join(line.split("--", 1)[0] for line in raw.splitlines())
    for family in FAMILIES:
        assert f"'{family.prefix}'" not in code and f"'{family.key}'" not in code
    for literal in (f"'{NEGATIVE_STREAK}'", "'r:calm'", "'\\30'", "'\\31'", "'\\29'"):
        assert literal not in code
    # every key name, field, store key and answer status of the contract is rendered from
    # processors/layout.py: the script spells none of them itself
    contract = {
        *ENTITY_KEYS.values(),
        *STORE_KEYS.values(),
        *PROFILE_FIELDS.values(),
        *STATUSES.values(),
        CALL_KEY,
        CALM,
        ROLE,
        ACCOUNT_ENTITY,
    }
    literals = set(re.findall(r"'([^'\\\n]*)'", code))
    assert literals, "the script's literals were read"  # not vacuous
    assert sorted(literals & contract) == []
    rendered = _lua("apply_event.lua")
    assert "--@LAYOUT@" not in rendered and lua_constants() in rendered
    for family in FAMILIES:
        assert f"prefix = '{family.prefix}', key = '{family.key}'" in rendered
        assert f"kept = {family.kept}, shown = {family.shown}, view = " in rendered
    assert all(f"'{key}'" in rendered for key in CUSTOMER_KEYS)


FREQUENT = [f"often{i}" for i in range(11)] + ["solar"]
RARE = [f"term{i:03d}" for i in range(160)]
LABELS = ("negative", "neutral", "positive")
CHANNEL_ACTIONS = ("purchase", "bill_paid", "bill_overdue", "share", "campaign_joined", "login")


def _emotion(label: str) -> EmotionResult:
    scores = dict.fromkeys(LABELS, 0.1)
    scores[label] = 0.8
    return EmotionResult(label, scores, None, None)


def workload(seed: int = 3, per_person: int = 70) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Three people (each past every cap: actions, keywords, problems, resolutions, with
    negative streaks), then events that merge them: (envelope, reading) pairs."""
    rng = random.Random(seed)
    people = [{"im_id": "wx-a"}, {"phone": "13900000002"}, {"email": "c@example.com"}]
    out = []
    for p, customer in enumerate(people):
        for i in range(per_person):
            minute = p * 1000 + i * 7
            at = f"2026-11-{1 + minute // 1440:02d}T{minute % 1440 // 60:02d}:{minute % 60:02d}:00Z"
            eid = f"w{p}-{i:03d}"
            roll = rng.random()
            if roll < 0.2:
                body = event(eid, "feedback.recorded", at, "crm", customer, {"satisfaction": 4})
                out.append((body, {}))
            elif roll < 0.26:
                action = ("added", "removed")[i % 5 == 0]
                relation = ("friend", "group")[i % 3 == 0]
                payload = {"employee_id": f"e{i % 4}", "relation": relation, "action": action}
                if relation == "group":
                    payload["group_id"] = f"g{i % 2}"
                out.append((event(eid, "relation.changed", at, "wecom", customer, payload), {}))
            elif roll < 0.36:  # business on an account: spend, bills, products, attributes
                payload = {
                    "action": rng.choice(CHANNEL_ACTIONS),
                    "amount": rng.choice([0, 12.5, 300]),
                    "items": [rng.choice(["solar", "meter"])],
                    "attributes": {"city": rng.choice(["上海", "北京"]), "role": "holder"},
                }
                owner = {**customer, "account_no": f"acct-{p}"}
                out.append((event(eid, "channel.event", at, "app", owner, payload), {}))
            else:
                payload = {
                    "conversation_id": f"c{p}",
                    "direction": "inbound",
                    "employee_id": f"e{i % 4}",
                    "text": "……",
                }
                reading = {
                    "emotion": _emotion(rng.choice(LABELS)),
                    "keywords": [rng.choice(FREQUENT), *rng.sample(RARE, 2)],
                    "intent": "complaint" if rng.random() < 0.4 else None,
                }
                out.append((event(eid, "chat.message", at, "wecom", customer, payload), reading))
    links = [{"im_id": "wx-a", "phone": "13900000002"}, {"email": "c@example.com", "im_id": "wx-a"}]
    for j, customer in enumerate(links):
        body = event(f"link{j}", "channel.event", "2026-11-03T09:00:00Z", "app", customer, {})
        body["payload"] = {"action": "login"}
        out.append((body, {}))
    return out


def _delta(body: dict[str, Any], reading: dict[str, Any], deltas: DeltaSettings = DELTAS) -> bytes:
    parsed = INPUT_EVENT_ADAPTER.validate_python(body)
    built = build_delta(
        parsed,
        deltas,
        reading.get("emotion"),
        keywords=reading.get("keywords", ()),
        intent=reading.get("intent"),
    )
    return built.to_json(NOW_MS, RETENTION_MS)


async def _document(store: RedisProfileStore, cid: str) -> dict[str, Any]:
    state = await store.load(cid) or {"fields": {}, "ids": []}
    return document_from_state(cid, state, {}, DOCUMENT)


def test_every_answer_gives_the_document_a_full_load_gives(redis_settings: Settings) -> None:
    """The worker builds changes from the answer's bounded views: before and after, every
    field must equal what a full load builds — through caps, streaks and merges."""

    async def scenario() -> int:
        store = open_store(redis_settings.redis_url, redis_settings.redis_key_prefix)
        checked = 0
        try:
            documents: dict[str, dict[str, Any]] = {}
            for body, reading in workload():
                [result] = await store.apply([_delta(body, reading)])
                assert result.status == "ok" and result.state is not None
                cid = result.customer_id or ""
                empty = document_from_state(cid, {"fields": {}, "ids": []}, {}, DOCUMENT)
                before = documents.get(cid, empty)
                after = await _document(store, cid)
                update = update_of(result.state, result.old, result.ids_added)
                changes = {c["field"]: c for c in changed_fields(update, None, DOCUMENT)}
                for name in FIELD_BUILDERS:
                    if before[name] == after[name]:
                        assert name not in changes, (body["event_id"], name)
                    else:
                        assert changes[name]["old"] == before[name], (body["event_id"], name)
                        assert changes[name]["new"] == after[name], (body["event_id"], name)
                        checked += 1
                documents[cid] = after
                for loser in result.merged:
                    documents.pop(loser, None)
        finally:
            await store.close()
        return checked

    assert asyncio.run(scenario()) > 500


def _families(client: redis.Redis, prefix: str, cid: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for family in FAMILIES:
        members = client.zrange(f"{prefix}c:{{{cid}}}:{family.key}", 0, -1, withscores=True)
        out[family.key] = [(m, float(f"{s:.12g}")) for m, s in members]  # sums in any order
    # Beyond its cap the keyword family is an approximation (a rare term dropped and
    # mentioned again starts over), so only its heaviest part is the same in any order.
    heaviest = sorted(out["kw"], key=lambda pair: (pair[1], pair[0]))  # scores: -weight
    out["kw"] = (len(heaviest), heaviest[:10])
    return out


def test_families_and_merges_are_the_same_in_any_order(redis_url: str, unique: str) -> None:
    """Shuffled arrival of the same events, merges included: the same document and the
    same members of every family (of the keyword weights, the heaviest)."""
    events = workload(seed=11, per_person=60)
    client = raw_client(redis_url)
    seen: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for attempt in range(4):
        order = events[:]
        random.Random(attempt).shuffle(order)
        prefix = f"f{unique}{attempt}:"

        async def go(prefix: str = prefix, order: list[Any] = order) -> tuple[Any, str]:
            store = open_store(redis_url, prefix)
            try:
                for start in range(0, len(order), 25):
                    chunk = order[start : start + 25]
                    results: list[ApplyResult] = await store.apply([_delta(*e) for e in chunk])
                    assert {r.status for r in results} == {"ok"}
                cid = await find_customer(store, "email", "c@example.com")
                assert cid is not None
                document = await _document(store, cid)
                return {k: v for k, v in document.items() if k != "customer_id"}, cid
            finally:
                await store.close()

        document, cid = asyncio.run(go())
        seen.append((document, _families(client, prefix, cid)))
    first_document, first_families = seen[0]
    assert first_document["version"] == len(events)
    assert first_document["stats"]["events_total"] == len(events)
    assert len(first_document["problems"]) == 10 and first_document["keywords"]
    for document, families in seen[1:]:
        assert document == first_document
        assert families == first_families
    # every capped family reached its cap (caps apply, and apply alike in every order)
    for family in FAMILIES:
        if family.kept:
            kept = first_families[family.key]
            assert (kept[0] if family.key == "kw" else len(kept)) == family.kept, family.key


def test_processed_ids_take_eight_bytes_and_last_one_to_two_retention_periods(
    redis_settings: Settings,
) -> None:
    body = event("dup-1", "channel.event", "2026-11-01T09:00:00Z", "app", {"phone": "1"}, {})
    body["payload"] = {"action": "login"}
    parsed = INPUT_EVENT_ADAPTER.validate_python(body)
    retention = 3_600_000
    start = (NOW_MS // retention) * retention  # the start of an epoch

    def at(now_ms: int) -> bytes:
        return build_delta(parsed, DELTAS).to_json(now_ms, retention)

    async def statuses() -> list[str]:
        store = open_store(redis_settings.redis_url, redis_settings.redis_key_prefix)
        try:
            end = start + 2 * retention
            moments = [start, start + retention - 1, end - 1, end]
            return [(await store.apply([at(now)]))[0].status for now in moments]
        finally:
            await store.close()

    # seen in its epoch and the next one; forgotten two epochs on (applied again)
    assert asyncio.run(statuses()) == ["ok", "dup", "dup", "ok"]
    client = raw_client(redis_settings.redis_url)
    cid = customer_id_for("phone:1")
    held = [
        sum(len(v) for v in client.hvals(key))
        for key in client.scan_iter(f"{redis_settings.redis_key_prefix}c:{{{cid}}}:{SEEN}*")
    ]
    assert sorted(held) == [SEEN_HASH_BYTES, SEEN_HASH_BYTES]  # two epochs, one id


def _login(eid: str, customer: dict[str, Any], at: str = "2026-11-01T09:00:00Z") -> bytes:
    body = event(eid, "channel.event", at, "app", customer, {})
    body["payload"] = {"action": "login"}
    delta = build_delta(INPUT_EVENT_ADAPTER.validate_python(body), DELTAS)
    return delta.to_json(NOW_MS, RETENTION_MS)


def test_processed_ids_spread_over_buckets_and_an_earlier_versions_string_still_counts(
    redis_settings: Settings,
) -> None:
    """A customer's ids go to their buckets (a check reads one); an id in the single
    string an earlier version wrote is still a duplicate, also after a merge moved it."""
    prefix = redis_settings.redis_key_prefix
    client = raw_client(redis_settings.redis_url)
    epoch = NOW_MS // RETENTION_MS
    older = customer_id_for("phone:7")
    legacy = hashlib.sha1(b"before-upgrade").digest()[:SEEN_HASH_BYTES]
    client.set(f"{prefix}c:{{{older}}}:{SEEN_LEGACY}{epoch}", legacy)

    async def go() -> tuple[list[str], list[str], list[str]]:
        store = open_store(redis_settings.redis_url, prefix)
        try:
            many = [_login(f"many-{i}", {"im_id": "busy"}) for i in range(300)]
            first = [r.status for r in await store.apply(many)]
            again = [r.status for r in await store.apply(random.Random(5).sample(many, 40))]
            story = [
                _login("p7", {"phone": "7"}, "2026-11-01T10:00:00Z"),  # the later person
                _login("e8", {"email": "e8@example.com"}),
                _login("join", {"phone": "7", "email": "e8@example.com"}),
                _login("before-upgrade", {"email": "e8@example.com"}),
            ]
            return first, again, [r.status for r in await store.apply(story)]
        finally:
            await store.close()

    first, again, story = asyncio.run(go())
    assert first == ["ok"] * 300 and again == ["dup"] * 40
    assert story == ["ok", "ok", "ok", "dup"]  # the legacy id came with the merged person
    assert not client.exists(f"{prefix}c:{{{older}}}:{SEEN_LEGACY}{epoch}")
    busy = customer_id_for("im_id:busy")
    buckets = [len(v) for v in client.hvals(f"{prefix}c:{{{busy}}}:{SEEN}{epoch}")]
    assert len(buckets) == SEEN_BUCKETS
    assert sum(buckets) == 300 * SEEN_HASH_BYTES
    assert max(buckets) < 300 * SEEN_HASH_BYTES / 8  # spread


def _alone(body: dict[str, Any]) -> dict[str, Any]:
    """The event without an account number (a person holding accounts is built apart)."""
    customer = {k: v for k, v in body["customer"].items() if k != "account_no"}
    return {**body, "customer": customer}


def _said_by_z(eid: str, day: int) -> dict[str, Any]:
    payload = {"conversation_id": "z", "direction": "inbound", "employee_id": f"e{day}"}
    at = f"2026-12-{day:02d}T09:00:00Z"
    return event(eid, "chat.message", at, "wecom", {"im_id": "wx-z"}, {**payload, "text": "…"})


def test_a_busy_customers_old_values_come_from_its_previous_update(
    redis_settings: Settings,
) -> None:
    """Within a batch the outputs take a customer's old values from the fields its
    previous update built: every change must be the one built from scratch — through
    caps, merges mid-stream, updates made elsewhere (another worker, an account's own
    event), and an erasure after which the person comes back."""
    deltas = DeltaSettings(timezone=ZoneInfo("Asia/Shanghai"), hasher=ErasureHasher(b"k"))
    pairs = [(_alone(body), reading) for body, reading in workload(seed=5, per_person=30)]
    random.Random(2).shuffle(pairs)  # the merging links land among the people's events
    erasure = event(
        "gone", "customer.erasure", "2026-12-20T00:00:00Z", "crm", {"im_id": "wx-z"}, {}
    )
    z = [_said_by_z(f"z{day}", day) for day in (10, 11, 12)]  # versions 1-3, then erased
    z += [erasure, *(_said_by_z(f"z{day}", day) for day in (21, 22, 23, 24))]  # 1-4 again
    # a holder of an account whose own events (bills) change it between the holder's
    holder = {"im_id": "wx-h", "account_no": "acct-h"}
    bill = {"action": "bill_paid", "amount": 300, "items": ["solar"]}
    for day in range(1, 7):
        at = f"2026-12-{day:02d}T10:00:00Z"
        z.append(_said_by_z(f"h{day}", day) | {"customer": holder})
        z.append(event(f"b{day}", "channel.event", at, "app", {"account_no": "acct-h"}, bill))
    pairs += [(body, {}) for body in z]
    outputs = Outputs(Settings(), DOCUMENT, PromptTemplates.load())
    record = InputRecord("chat", 0, 0, None, None)
    counted = {"reused": 0, "elsewhere": 0}

    async def scenario() -> None:
        store = open_store(redis_settings.redis_url, redis_settings.redis_key_prefix)
        try:
            for n, (body, reading) in enumerate(pairs):
                [result] = await store.apply([_delta(body, reading, deltas)])
                if result.status == "erased":
                    outputs.erased(body["event_id"], result.erased, "t")
                    continue
                if result.status == "acct" or n % 7 == 3:  # applied by someone else
                    counted["elsewhere"] += 1
                    continue
                assert result.status == "ok" and result.state is not None, body["event_id"]
                cid = result.customer_id or ""
                update = update_of(
                    result.state, result.old, result.ids_added, result.accounts, result.links_added
                )
                expected = changed_fields(update, {"scores": ({}, {})}, DOCUMENT)
                remembered = outputs._built.get(cid)
                parsed = INPUT_EVENT_ADAPTER.validate_python(body)
                done = AppliedEvent(record, parsed, None, result, update, ({}, {}))
                [change] = [
                    body
                    for body in map(
                        orjson.loads, (o.value for o in outputs.applied(done, "t", again=True))
                    )
                    if body["type"] == "profile.changed"
                ]
                assert change["changed"] == orjson.loads(orjson.dumps(expected)), body["event_id"]
                previous = int(update.before.meta.get("version", 0))
                counted["reused"] += remembered is not None and remembered[0] == previous
        finally:
            await store.close()

    asyncio.run(scenario())
    # most updates took their old values from the one before; some followed others'
    assert counted["reused"] > 50 and counted["elsewhere"] > 15


def test_the_script_reads_only_the_fields_python_sends() -> None:
    from processors.profile import ProfileDelta
    from state.cluster.base import STEP_FIELDS

    raw = files("state").joinpath("apply_event.lua").read_text(encoding="utf-8")
    code = "\n".join(line.split("--", 1)[0] for line in raw.splitlines())
    read = set(re.findall(r"\bd\.([a-z_]+)", code))
    delta = ProfileDelta(
        "e-1",
        1,
        ["phone:+8613900000000"],
        "c-1",
        accounts=["A-1"],
        id_hashes=["h"],
        suppression_ms=1,
        call={"id": "call-1"},
        trend={"w": 1},
        whole=True,
    )
    sent = set(orjson.loads(delta.to_json(1, 1))) | set(
        orjson.loads(delta.to_json(1, 1, quiet=True))
    )
    assert {"eid", "ids", "accts", "ts"} <= read  # not vacuous
    assert read - sent - set(STEP_FIELDS) == set()
    assert sent.isdisjoint(STEP_FIELDS)
