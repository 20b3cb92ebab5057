"""People and accounts through the batch pipeline: ``account.changed`` outputs (validated
by their schema model), identity rejections counted, an unusable event in the DLQ."""

from __future__ import annotations

from typing import Any

from prometheus_client import REGISTRY

from portrait.config import Settings
from portrait.events import OUTPUT_MODELS
from streams.testing import ListSink, input_records
from tests.support.envelopes import chan, event
from tests.support.pipeline import RunBatch


def outputs(sink: ListSink, kind: str) -> list[dict[str, Any]]:
    found = [e for e in sink.events() if e["type"] == kind]
    for item in found:
        OUTPUT_MODELS[kind].model_validate(item)
    return found


def rejections(kind: str, reason: str) -> float:
    labels = {"kind": kind, "reason": reason}
    return REGISTRY.get_sample_value("portrait_identity_rejections_total", labels) or 0.0


def test_links_and_account_events_emit_account_changed(
    redis_settings: Settings, run_batch: RunBatch
) -> None:
    friend = event(
        "f1",
        "relation.changed",
        "2026-11-01T08:00:00Z",
        "wecom",
        {"phone": "13912345678"},
        {"employee_id": "emp-7", "relation": "friend", "action": "added"},
    )
    holder = chan(
        "a1",
        "2026-11-01T09:00:00Z",
        "app",
        {"phone": "+86 139 1234 5678", "account_no": "H1"},
        role="account_holder",
    )
    paid = event(
        "a2",
        "channel.event",
        "2026-11-02T09:00:00Z",
        "app",
        {"account_no": "H1"},
        {"action": "bill_paid", "amount": 88},
    )
    sink = ListSink()
    run_batch(redis_settings, input_records("t.channel-events", [friend, holder, paid]), sink)
    changed = outputs(sink, "account.changed")
    assert [c["source_event_id"] for c in changed] == ["a1", "a2"]
    link, bill = changed
    assert link["account_no"] == "H1" and link["customer_id"] is not None
    [people] = [c for c in link["changed"] if c["field"] == "people"]
    assert people["old"] == [] and people["new"] == [
        {"customer_id": link["customer_id"], "role": "account_holder"}
    ]
    assert bill["customer_id"] is None and bill["notify"] == ["emp-7"]
    fields = {c["field"]: c for c in bill["changed"]}
    assert fields["stats"]["new"]["events_total"] == 1
    assert fields["indicators"]["new"]["credit"] == 1.0
    assert fields["behaviour"]["new"] == {"bill_paid": 1}
    assert bill["version"] == link["version"] + 1
    # keyed by the account number
    keys = [r.key for r in sink.records if b"account.changed" in r.value]
    assert keys == [b"H1", b"H1"]
    # the person's profile.changed shows the account held
    [person] = [c for c in outputs(sink, "profile.changed") if c["source_event_id"] == "a1"]
    accounts = [c for c in person["changed"] if c["field"] == "accounts"]
    assert accounts and accounts[0]["new"][0]["account_no"] == "H1"


def test_rejected_identifiers_are_counted_and_an_event_without_any_goes_to_the_dlq(
    redis_settings: Settings, run_batch: RunBatch
) -> None:
    before_blocked = rejections("phone", "blocked")
    junk_only = chan("j1", "2026-11-01T09:00:00Z", "app", {"phone": "00000000000"})
    junk_and_im = chan("j2", "2026-11-01T09:00:00Z", "app", {"phone": "10086", "im_id": "wx9"})
    sink = ListSink()
    outcome = run_batch(
        redis_settings, input_records("t.channel-events", [junk_only, junk_and_im]), sink
    )
    [dlq] = outputs(sink, "dlq.record")
    assert dlq["reason"] == "identifiers_rejected" and dlq["offset"] == 0
    assert outcome.outcomes[("t.channel-events", "ok")] == 1
    assert rejections("phone", "blocked") == before_blocked + 2
    [changed] = outputs(sink, "profile.changed")
    [field] = [c for c in changed["changed"] if c["field"] == "identity_rejections"]
    assert field["new"] == [{"kind": "phone", "reason": "blocked", "count": 1}]


def test_an_accounts_wealth_comes_from_its_spend_and_its_people_count_it(
    redis_settings: Settings, run_batch: RunBatch
) -> None:
    import asyncio

    from state.stores import store_for
    from streams.lookup import get_account, get_profile

    people = [
        chan(f"w{n}", "2026-11-01T09:00:00Z", "app", {"phone": phone, "account_no": "W1"}, role=r)
        for n, (phone, r) in enumerate(
            [("13900000001", "holder"), ("13900000002", "family_member"), ("13900000003", "tenant")]
        )
    ]
    spend = [
        event(
            f"s{n}", "channel.event", f"2026-11-0{n + 2}T09:00:00Z", "app", {"account_no": "W1"}, p
        )
        for n, p in enumerate(
            [
                {"action": "bill_paid", "amount": 210.5},
                {"action": "bill_paid", "amount": 198.0},
                {"action": "bill_paid", "amount": 225.0},
                {"action": "business_handled", "amount": 5000},
            ]
        )
    ]
    small = event(  # another account, with less spend: W1 ranks above it
        "s9",
        "channel.event",
        "2026-11-03T09:00:00Z",
        "app",
        {"account_no": "W2"},
        {"action": "bill_paid", "amount": 20},
    )
    sink = ListSink()
    run_batch(redis_settings, input_records("t.channel-events", [*people, *spend, small]), sink)

    async def read() -> tuple[Any, list[Any]]:
        store = store_for(redis_settings)
        try:
            account = await get_account(store, "W1")
            found = [await get_profile(store, "phone", f"1390000000{n}") for n in (1, 2, 3)]
            return account, found
        finally:
            await store.close()

    account, holders = asyncio.run(read())
    assert account["indicators"]["credit"] == 1.0
    assert account["indicators"]["wealth"] == 0.75  # above W2: (1 + 0.5) / 2
    for person in holders:
        assert person["indicators"]["wealth"] is not None and person["indicators"]["wealth"] > 0.5
        assert person["indicators"]["credit"] == 1.0
        [held] = person["accounts"]
        assert held["indicators"]["wealth"] == 0.75
    # account.changed carries it too (ranked against the population as the batch began)
    later = event(
        "s10",
        "channel.event",
        "2026-11-09T09:00:00Z",
        "app",
        {"account_no": "W1"},
        {"action": "bill_paid", "amount": 50},
    )
    sink = ListSink()
    run_batch(redis_settings, input_records("t.channel-events", [later]), sink)
    [changed] = outputs(sink, "account.changed")
    assert {c["field"]: c for c in changed["changed"]}["indicators"]["new"]["wealth"] == 0.75
