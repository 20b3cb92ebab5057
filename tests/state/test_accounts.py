"""People and accounts, and the identity rules, against a real Redis (docs/design.md "People
and accounts", "Identity rules"): a household shares an account without becoming one
person; account-only events apply to the account; limits, blocked values and conflicts."""

from __future__ import annotations

import asyncio
import random
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from portrait.config import DEFAULT_IDENTITY_FILE, Settings
from processors.document import document_settings
from processors.identity import IdentityRules
from processors.profile import DeltaSettings
from state.answers import ApplyResult
from streams.lookup import SeveralPeople, find_customer
from tests.support.envelopes import chan, event
from tests.support.state import account_of, apply_events, open_store, profile_of

RULES = IdentityRules.load(DEFAULT_IDENTITY_FILE)
DELTAS = DeltaSettings(timezone=ZoneInfo("Asia/Shanghai"), identity=RULES)
DOCUMENT = document_settings(Settings())


def apply(settings: Settings, events: list[dict[str, Any]]) -> list[ApplyResult]:
    return apply_events(settings, events, DELTAS)


def profile(settings: Settings, kind: str, value: str) -> dict[str, Any] | None:
    return profile_of(settings, kind, value, DOCUMENT)


def account(settings: Settings, number: str) -> dict[str, Any] | None:
    return account_of(settings, number, DOCUMENT)


def bill(eid: str, at: str, customer: dict[str, Any], action: str, amount: float = 0) -> dict:
    payload: dict[str, Any] = {"action": action}
    if amount:
        payload["amount"] = amount
    return event(eid, "channel.event", at, "app", customer, payload)


HOUSEHOLD = [
    chan(
        "h1",
        "2026-11-01T09:00:00+08:00",
        "wechat",
        {"phone": "+86 139 1234 5678", "account_no": "H-100"},
        name="王伟",
        role="account_holder",
    ),
    chan(
        "h2",
        "2026-11-02T09:00:00+08:00",
        "app",
        {"phone": "13800001111", "account_no": "H-100"},
        name="李娜",
        role="family_member",
    ),
    bill("h3", "2026-11-03T10:00:00+08:00", {"account_no": "H-100"}, "bill_paid", 120.0),
    bill("h4", "2026-11-04T10:00:00+08:00", {"account_no": "H-100"}, "bill_overdue"),
    chan("h5", "2026-11-05T09:00:00+08:00", "hotline", {"phone": "0086 13912345678"}),
    chan("h6", "2026-11-06T09:00:00+08:00", "web", {"phone": "139-1234-5678"}, city="上海"),
]


def test_a_household_shares_an_account_without_becoming_one_person(
    redis_settings: Settings,
) -> None:
    results = apply(redis_settings, HOUSEHOLD)
    assert [r.status for r in results] == ["ok", "ok", "acct", "acct", "ok", "ok"]
    wang = profile(redis_settings, "phone", "13912345678")
    li = profile(redis_settings, "phone", "+86 138 0000 1111")
    assert wang is not None and li is not None
    assert wang["customer_id"] != li["customer_id"]
    assert wang["attributes"]["name"]["value"] == "王伟"
    assert li["attributes"]["name"]["value"] == "李娜"
    # the same phone written three ways is one person
    assert wang["identifiers"]["phone"] == ["+8613912345678"]
    assert wang["stats"]["events_total"] == 3
    assert "account_no" not in wang["identifiers"]
    [held] = wang["accounts"]
    assert held["account_no"] == "H-100" and held["role"] == "account_holder"
    assert "transfer_account" in held["permissions"]
    # the bills are the account's events, seen in both profiles
    assert held["stats"]["events_total"] == 2
    assert held["indicators"]["credit"] == 0.5
    [li_held] = li["accounts"]
    assert li_held["role"] == "family_member" and li_held["stats"] == held["stats"]
    assert "transfer_account" not in li_held["permissions"]
    # a person's indicators count the accounts they hold
    assert wang["indicators"]["credit"] == 0.5 and li["indicators"]["credit"] == 0.5

    doc = account(redis_settings, "H-100")
    assert doc is not None
    assert doc["people"] == sorted(
        [
            {"customer_id": wang["customer_id"], "role": "account_holder"},
            {"customer_id": li["customer_id"], "role": "family_member"},
        ],
        key=lambda p: p["customer_id"],
    )
    assert doc["stats"]["events_total"] == 2 and doc["stats"]["by_channel"] == {"app": 2}
    assert doc["behaviour"] == {"bill_overdue": 1, "bill_paid": 1}
    assert doc["indicators"]["credit"] == 0.5
    assert doc["version"] == 4  # two bills and two events that named it


def test_an_account_number_finds_a_person_only_when_one_holds_it(
    redis_settings: Settings,
) -> None:
    apply(redis_settings, HOUSEHOLD[:1])

    async def find() -> str | None:
        store = open_store(redis_settings.redis_url, redis_settings.redis_key_prefix)
        try:
            return await find_customer(store, "account_no", "H-100")
        finally:
            await store.close()

    assert asyncio.run(find()) == profile(redis_settings, "phone", "13912345678")["customer_id"]  # type: ignore[index]
    apply(redis_settings, HOUSEHOLD[1:2])
    with pytest.raises(SeveralPeople) as several:
        asyncio.run(find())
    assert several.value.count == 2


def test_account_only_events_are_idempotent(redis_settings: Settings) -> None:
    first, again = apply(redis_settings, [HOUSEHOLD[2], HOUSEHOLD[2]])
    assert first.status == "acct" and again.status == "dup"
    assert again.replay is not None and again.replay.status == "acct"
    doc = account(redis_settings, "H-100")
    assert doc is not None and doc["stats"]["events_total"] == 1 and doc["people"] == []


def test_any_order_gives_the_same_people_and_accounts(redis_settings: Settings) -> None:
    merge = chan(
        "h7",
        "2026-11-07T09:00:00+08:00",
        "web",
        {"phone": "13800001111", "email": "li@corp.cn", "account_no": ["H-100", "C-9"]},
    )
    other = chan(
        "h8",
        "2026-11-08T09:00:00+08:00",
        "web",
        {"email": "li@corp.cn", "account_no": "C-9"},
        role="enterprise_contact",
    )
    junk = chan("h9", "2026-11-09T09:00:00+08:00", "web", {"phone": "00000000000", "im_id": "j1"})
    junk2 = chan("h10", "2026-11-09T10:00:00+08:00", "web", {"phone": "00000000000", "im_id": "j2"})
    story = [*HOUSEHOLD, merge, other, junk, junk2]
    views = []
    for seed in range(4):
        shuffled = story[:]
        random.Random(seed).shuffle(shuffled)
        prefix = f"{redis_settings.redis_key_prefix}o{seed}:"
        settings = redis_settings.model_copy(update={"redis_key_prefix": prefix})
        apply(settings, shuffled)
        apply(settings, shuffled[:3])  # redeliveries change nothing
        people = [
            profile(settings, "phone", "13912345678"),
            profile(settings, "phone", "13800001111"),
            profile(settings, "im_id", "j1"),
            profile(settings, "im_id", "j2"),
        ]
        for doc in people:
            assert doc is not None
            doc.pop("scores")
        views.append((people, account(settings, "H-100"), account(settings, "C-9")))
    assert all(view == views[0] for view in views[1:])
    people, household, company = views[0]
    assert people[2]["customer_id"] != people[3]["customer_id"]  # the junk phone merged no one
    assert people[2]["identity_rejections"] == [{"kind": "phone", "reason": "blocked", "count": 1}]
    li = people[1]
    assert [a["account_no"] for a in li["accounts"]] == ["C-9", "H-100"]
    assert {a["account_no"]: a["role"] for a in li["accounts"]} == {
        "C-9": "enterprise_contact",
        "H-100": "family_member",
    }
    assert company is not None and company["people"] == [
        {"customer_id": li["customer_id"], "role": "enterprise_contact"}
    ]
    assert household is not None and len(household["people"]) == 2


def test_a_person_holds_at_most_the_limit_of_a_kind(redis_settings: Settings) -> None:
    phones = [f"1390000{n:04d}" for n in range(1, 8)]
    events = [
        chan(f"p{n}", f"2026-11-0{n}T09:00:00+08:00", "app", {"im_id": "wx-many", "phone": p})
        for n, p in enumerate(phones, start=1)
    ]
    results = apply(redis_settings, events)
    assert [r.rejections for r in results][-2:] == [[("phone", "limit")], [("phone", "limit")]]
    doc = profile(redis_settings, "im_id", "wx-many")
    assert doc is not None and len(doc["identifiers"]["phone"]) == 5
    assert doc["identity_rejections"] == [{"kind": "phone", "reason": "limit", "count": 2}]
    assert profile(redis_settings, "phone", phones[-1]) is None  # never resolves


def test_a_merge_of_two_people_with_different_customer_ids_is_refused(
    redis_settings: Settings,
) -> None:
    first = chan(
        "k1", "2026-11-01T09:00:00+08:00", "crm", {"customer_id": "CRM-1", "phone": "13911110001"}
    )
    second = chan(
        "k2", "2026-11-02T09:00:00+08:00", "crm", {"customer_id": "CRM-2", "email": "b@corp.cn"}
    )
    # a shared landline given by the second person: it would merge CRM-1 and CRM-2
    bridge = chan(
        "k3", "2026-11-03T09:00:00+08:00", "crm", {"customer_id": "CRM-2", "phone": "13911110001"}
    )
    *_, result = apply(redis_settings, [first, second, bridge])
    assert result.merged == [] and result.rejections == [("phone", "conflict")]
    one = profile(redis_settings, "customer_id", "CRM-1")
    two = profile(redis_settings, "customer_id", "CRM-2")
    assert one is not None and two is not None and one["customer_id"] != two["customer_id"]
    assert two["stats"]["events_total"] == 2 and two["identifiers"]["phone"] == []
    assert two["identity_rejections"] == [{"kind": "phone", "reason": "conflict", "count": 1}]


def test_a_merge_unions_account_links_and_erasure_unlinks(redis_settings: Settings) -> None:
    apply(
        redis_settings,
        [
            chan(
                "m1",
                "2026-11-01T09:00:00+08:00",
                "app",
                {"phone": "13911112222", "account_no": "A"},
            ),
            chan(
                "m2", "2026-11-02T09:00:00+08:00", "app", {"email": "x@corp.cn", "account_no": "B"}
            ),
            chan("m3", "2026-11-02T10:00:00+08:00", "app", {"im_id": "other", "account_no": "B"}),
            bill("m4", "2026-11-03T09:00:00+08:00", {"account_no": "A"}, "bill_paid"),
            chan(
                "m5",
                "2026-11-04T09:00:00+08:00",
                "app",
                {"phone": "13911112222", "email": "x@corp.cn"},
            ),
        ],
    )
    merged = profile(redis_settings, "email", "x@corp.cn")
    assert merged is not None
    assert [a["account_no"] for a in merged["accounts"]] == ["A", "B"]
    b = account(redis_settings, "B")
    assert b is not None
    assert merged["customer_id"] in [p["customer_id"] for p in b["people"]]
    assert len(b["people"]) == 2

    erase = event(
        "m6", "customer.erasure", "2026-11-05T00:00:00Z", "crm", {"phone": "13911112222"}, {}
    )
    [erased] = apply(redis_settings, [erase])
    assert erased.status == "erased"
    assert account(redis_settings, "A") is None  # no people left: removed with its data
    b = account(redis_settings, "B")
    assert b is not None and len(b["people"]) == 1  # "other" still holds it


def test_an_erasure_by_account_number_erases_its_one_holder_only(
    redis_settings: Settings,
) -> None:
    solo = chan(
        "s1", "2026-11-01T09:00:00+08:00", "app", {"phone": "13977778888", "account_no": "SOLO"}
    )
    apply(redis_settings, [solo, *HOUSEHOLD[:2]])
    single = event(
        "e1", "customer.erasure", "2026-11-09T00:00:00Z", "crm", {"account_no": "SOLO"}, {}
    )
    [result] = apply(redis_settings, [single])
    assert result.status == "erased" and len(result.erased) == 1
    assert account(redis_settings, "SOLO") is None
    assert profile(redis_settings, "phone", "13977778888") is None

    shared = event(
        "e2", "customer.erasure", "2026-11-09T00:00:00Z", "crm", {"account_no": "H-100"}, {}
    )
    [result] = apply(redis_settings, [shared])
    assert result.status == "noop"  # two people hold it: neither is erased for it
    doc = account(redis_settings, "H-100")
    assert doc is not None and len(doc["people"]) == 2
