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
