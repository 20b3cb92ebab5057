"""Every output of an applied event survives a crash between the state update and the
delivery: the redelivered events re-emit all of them, with the same ids and content.

The first delivery of the batch fails after Redis applied it (as a worker killed at that
point would leave it); the pipeline's retry is then a redelivery of events Redis has
seen, and must emit exactly what a run without the failure emits — for every output
kind: profile.changed, profile.merged, profile.snapshot, account.changed (a link and an
account-only event), agent.prompt (chat and call) and profile.erased.
"""

from __future__ import annotations

from typing import Any

from portrait.config import Settings
from streams.testing import ListSink, input_records
from tests.support.envelopes import ANGRY_ZH, HAPPY_EN, call, chan, chat, event
from tests.support.pipeline import RunBatch

STORY: list[dict[str, Any]] = [
    chan("r1", "2026-11-01T09:00:00Z", "app", {"phone": "13911112222", "account_no": "R-1"}),
    chat("r2", "2026-11-01T10:00:00Z", {"im_id": "wx-r"}, ANGRY_ZH),
    event(
        "r3",
        "relation.changed",
        "2026-11-01T11:00:00Z",
        "wecom",
        {"im_id": "wx-r"},
        {"employee_id": "emp-1", "relation": "friend", "action": "added"},
    ),
    chan("r4", "2026-11-01T12:00:00Z", "web", {"im_id": "wx-r", "phone": "13911112222"}),
    event(
        "r5",
        "channel.event",
        "2026-11-01T13:00:00Z",
        "app",
        {"account_no": "R-1"},
        {"action": "bill_paid", "amount": 50},
    ),
    *call("call-r", {"email": "r@corp.cn"}, [("customer", HAPPY_EN, 40)]),
    event("r6", "customer.erasure", "2026-11-02T00:00:00Z", "crm", {"email": "r@corp.cn"}, {}),
]

KINDS = {
    "profile.changed",
    "profile.merged",
    "profile.snapshot",
    "account.changed",
    "agent.prompt",
    "profile.erased",
}


def comparable(sink: ListSink) -> list[tuple[str, str, bytes | None, dict[str, Any]]]:
    """(topic, event id, key, content without the delivery time) of each output."""
    out = []
    for record, value in zip(sink.records, sink.events(), strict=True):
        body = {k: v for k, v in value.items() if k not in ("emitted_at", "latency_ms")}
        out.append((record.topic, value["event_id"], record.key, body))
    return sorted(out, key=lambda item: item[1])


def test_a_failed_delivery_re_emits_every_output_kind_unchanged(
    redis_settings: Settings, run_batch: RunBatch
) -> None:
    records = input_records("t.chat", STORY, timestamp_ms=1.0)
    clean = ListSink()
    run_batch(redis_settings.model_copy(update={"redis_key_prefix": "clean:"}), records, clean)
    assert {e["type"] for e in clean.events()} >= KINDS

    crashed = ListSink(failures=1)  # Redis applied the batch; its delivery failed
    run_batch(redis_settings.model_copy(update={"redis_key_prefix": "crash:"}), records, crashed)
    assert comparable(crashed) == comparable(clean)
