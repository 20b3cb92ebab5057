"""``portrait.profiles`` read from the beginning against ``profile get``, after merges and an
erasure; and ``portrait snapshot``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from portrait.config import Settings
from streams.kafka import client_config, read_topic
from tests.support.envelopes import REPLAY_STORY as STORY
from tests.support.envelopes import event, settings_env
from tests.support.worker import PORTRAIT, StartWorker, outputs, produce, profile_get, wait_for

pytestmark = pytest.mark.integration

ERASED = {"email": "gone@corp.cn"}
EXTRA = [
    event("pt-1", "channel.event", "2026-11-07T09:00:00+08:00", "app", ERASED, {"action": "login"}),
    event("pt-2", "customer.erasure", "2026-11-08T09:00:00+08:00", "crm", ERASED, {}),
    event(  # an account-only bill: the account's document is published too
        "pt-3",
        "channel.event",
        "2026-11-08T10:00:00+08:00",
        "billing",
        {"account_no": "R-1"},
        {"action": "bill_paid", "amount": 88.5},
    ),
]


def latest_by_key(settings: Settings) -> dict[str, Any]:
    """The topic read from the beginning: each key's newest value (None: a tombstone)."""
    topic = settings.topic("profiles")
    latest: dict[str, Any] = {}
    for key, value in read_topic(settings, topic, timeout=30, idle_timeout=3):
        latest[(key or b"").decode()] = json.loads(value) if value else None
    return latest


def _changed(settings: Settings) -> set[str]:
    return {o["source_event_id"] for o in outputs(settings, "profile-changes")}


def test_the_topic_holds_every_live_profile_and_snapshot_writes_them(
    stack_settings: Settings, tmp_path: Path, worker: StartWorker
) -> None:
    settings = stack_settings.model_copy(update={"profiles_topic": True})
    with worker(settings, tmp_path / "worker.log"):
        for sent in ([*STORY, EXTRA[0]], EXTRA[1:]):  # the erasure after what it erases
            produce(settings, sent)
            wait_for(lambda sent=sent: _changed(settings) >= {e["event_id"] for e in sent})
        changes = outputs(settings, "profile-changes")
        merged = {c["merged_id"] for c in changes if c["type"] == "profile.merged"}
        erased = {c["customer_id"] for c in changes if c["type"] == "profile.erased"}
        assert merged and erased

        snapshot_file = tmp_path / "profiles.jsonl"
        done = subprocess.run(
            [*PORTRAIT, "snapshot", "--jsonl", str(snapshot_file)],
            env=settings_env(settings),
            capture_output=True,
            timeout=120,
            check=True,
        )
        assert b"profiles written" in done.stderr
        live = {
            d["customer_id"]: d for d in map(json.loads, snapshot_file.read_text().splitlines())
        }
        assert len(live) == 2 and not (set(live) & (merged | erased))  # the pair, the giver

        def caught_up() -> bool:
            latest = latest_by_key(settings)
            return all(latest.get(cid) == document for cid, document in live.items())

        wait_for(caught_up, timeout=60, what="the profiles topic")
    latest = latest_by_key(settings)
    for customer_id, document in live.items():  # each the same as `profile get`
        _, expected, _ = profile_get(settings, "--customer-id", customer_id)
        assert latest[customer_id] == document == expected
    # the account is there under its number; anything else is a merged-away or erased
    # customer, whose tombstone this broker (Tansu) drops (Apache Kafka keeps it)
    assert latest["R-1"]["account_no"] == "R-1" and latest["R-1"]["stats"]["events_total"] >= 1
    assert set(latest) - set(live) - {"R-1"} <= merged | erased

    # created compacted, so that a late subscriber finds every key's newest record
    admin = AdminClient(client_config(settings))
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.topic("profiles"))
    [described] = admin.describe_configs([resource]).values()
    assert described.result(timeout=10)["cleanup.policy"].value == "compact"
