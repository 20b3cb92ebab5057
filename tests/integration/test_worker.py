"""The real ``portrait worker`` against the session's Tansu broker and Redis."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import orjson
import pytest

from portrait.config import Settings
from tests.support.envelopes import chan, chat, event, settings_env
from tests.support.state import raw_client
from tests.support.worker import (
    PORTRAIT,
    Metrics,
    StartWorker,
    http_get,
    outputs,
    produce,
    profile_get,
    wait_for,
)

pytestmark = pytest.mark.integration


def test_worker_builds_profiles_merges_and_rejects_bad_input(
    stack_settings: Settings, tmp_path: Path, worker: StartWorker
) -> None:
    settings = stack_settings
    first = [
        chan(
            "w1",
            "2026-11-01T09:00:00+08:00",
            "app",
            {"phone": "+86 139-0000-1111"},
            name="李娜",
            birthday="1990/5/6",
            city="上海",
        ),
        chat("w2", "2026-11-02T21:00:00+08:00", {"im_id": "wx-li"}, "你好，我想问一下账单"),
        chat("w3", "2026-11-02T21:05:00+08:00", {"im_id": "wx-li"}, "Is my bill ready?"),
        event(
            "w4",
            "profile.edited",
            "2026-11-01T12:00:00+08:00",
            "crm",
            {"phone": "8613900001111"},
            {"editor_id": "emp-1", "set": {"city": "杭州"}, "tags_add": ["vip"]},
        ),
    ]
    bad = [
        b"{broken",
        orjson.dumps({"type": "chat.message", "event_id": "no-fields"}),
        b"\xff\xfe",
        orjson.dumps({**first[0], "type": "profile.exploded"}),
    ]
    produce(settings, first)
    produce(settings, bad, topic="chat")
    with worker(settings, tmp_path / "worker.log"):
        wait_for(lambda: profile_get(settings, "--im-id", "wx-li")[0] == 0, what="first profile")
        # a shared e-mail links the phone customer and the IM customer (the account they
        # name is linked, never used to merge); w1 is replayed (a duplicate) and w0
        # arrives late but happened first
        link = chan(
            "w5",
            "2026-11-03T10:00:00+08:00",
            "hotline",
            {"account_no": "ACC-7", "im_id": "wx-li", "email": "Li.Na@corp.cn"},
            city="北京",
        )
        link2 = chan(
            "w6",
            "2026-11-03T11:00:00+08:00",
            "web",
            {"account_no": "ACC-7", "phone": "8613900001111", "email": "li.na@corp.cn"},
        )
        late = chan(
            "w0", "2026-10-01T08:00:00+08:00", "app", {"phone": "8613900001111"}, company="Acme"
        )
        # w5 before w6 (other partitions may be read in any order): w5 links the IM
        # customer to ACC-7, then w6's merge moves the link to the survivor
        produce(settings, [link])
        wait_for(lambda: profile_get(settings, "--account-no", "ACC-7")[0] == 0, what="w5")
        produce(settings, [first[0], link2, late])

        def merged() -> bool:
            code, body, _ = profile_get(settings, "--account-no", "ACC-7")
            return code == 0 and body is not None and body["stats"]["events_total"] == 7

        wait_for(merged, what="merged profile with 7 events")
        dlq = outputs(settings, "dlq")

        def caught_up() -> bool:  # every input processed and committed: lag 0 everywhere
            lines = [
                line
                for line in http_get(settings, "/metrics")[1].splitlines()
                if line.startswith("portrait_consumer_lag_messages{")
            ]
            return bool(lines) and all(line.endswith(" 0.0") for line in lines)

        wait_for(caught_up, timeout=30, what="consumer lag 0")
        health = http_get(settings, "/livez"), http_get(settings, "/readyz")
        metrics = http_get(settings, "/metrics")[1]

    code, doc, _ = profile_get(settings, "--phone", "+86 13900001111")
    assert code == 0 and doc is not None
    assert doc == profile_get(settings, "--im-id", "wx-li")[1]
    assert doc["identifiers"] == {
        "phone": ["+8613900001111"],
        "im_id": ["wx-li"],
        "email": ["li.na@corp.cn"],
        "customer_id": [],
    }
    assert [a["account_no"] for a in doc["accounts"]] == ["ACC-7"]
    assert doc["stats"]["by_channel"] == {"app": 2, "crm": 1, "hotline": 1, "web": 1, "wecom": 2}
    assert doc["stats"]["first_seen"] == "2026-10-01T00:00:00.000Z"
    assert doc["stats"]["last_seen"] == "2026-11-03T03:00:00.000Z"
    assert doc["attributes"]["city"]["value"] == "杭州"  # manual beats the later 北京
    assert doc["attributes"]["city"]["source"] == "manual"
    assert doc["attributes"]["birthday"]["value"] == "1990-05-06"
    assert doc["attributes"]["company"]["value"] == "Acme"
    assert doc["tags"] == ["vip"]
    assert doc["preferences"]["time_of_day"] in {"morning", "evening"}
    # w2 and w3 are inbound questions about a bill: read, and neither is negative
    assert doc["emotion"]["last"] == "neutral"
    assert doc["emotion"]["negative_streak"] == 0
    assert -0.5 < doc["emotion"]["average"] < 0.5
    assert doc["scores"]["model_version"] == "customer-2026.11.1"
    assert [r["employee_id"] for r in doc["relationships"]] == ["emp-1"]  # two chats, no relation
    assert doc["scores"]["priority"] in {"low", "normal", "high", "urgent"}
    assert 0.0 <= doc["scores"]["churn_risk"] <= 1.0

    changes = outputs(settings, "profile-changes")
    kinds = [c["type"] for c in changes]
    assert len(changes) == 10
    assert kinds.count("profile.changed") == 7  # the duplicate w1 emitted nothing new
    # w5 linked the IM customer to ACC-7; w6's merge moved the link to the survivor
    linked = [c for c in changes if c["type"] == "account.changed"]
    assert [c["source_event_id"] for c in linked] == ["w5", "w6"]
    assert linked[-1]["changed"][0]["new"] == [{"customer_id": doc["customer_id"], "role": None}]
    [merge] = [c for c in changes if c["type"] == "profile.merged"]
    assert {merge["customer_id"], merge["merged_id"]} >= {doc["customer_id"]}
    assert merge["customer_id"] == doc["customer_id"]
    versions = [
        c["version"]
        for c in changes
        if c["type"] == "profile.changed" and c["customer_id"] == doc["customer_id"]
    ]
    assert versions == sorted(versions) and versions[-1] == doc["version"]

    assert sorted(d["reason"].split(":")[0] for d in dlq) == [
        "invalid_event",
        "invalid_json",
        "invalid_utf8",
        "unknown_type",
    ]
    assert sorted(base64.b64decode(d["value_b64"]) for d in dlq) == sorted(bad)
    assert {d["topic"] for d in dlq} == {settings.topic("chat")}

    code, _, err = profile_get(settings, "--email", "nobody@example.com")
    assert code == 1 and "no customer" in err

    assert health[0][0] == 200 and health[1][0] == 200
    assert json.loads(health[1][1])["checks"] == {
        "redis": True,
        "durability": True,
        "kafka": True,
        "partitions": True,
        "bulk_lane": True,  # the bulk lane runs in a process of its own
    }
    # one scrape of the worker reads both lanes' processes, each sample with its lane
    read = Metrics(metrics)
    assert read.value("portrait_dlq_total", reason="invalid_json", lane="realtime") == 1.0
    assert read.value("portrait_dlq_total", reason="unknown_type", lane="realtime") == 1.0
    topic = settings.topic("chat")
    assert read.value("portrait_events_total", topic=topic, outcome="ok", lane="realtime") == 2.0
    assert read.value("portrait_merges_total", lane="bulk") == 1.0  # a channel event merged
    assert read.value("portrait_merges_total", lane="realtime") == 0.0
    assert read.value("portrait_model_inference_seconds_count", model="emotion", lane="realtime")
    assert metrics.count("# TYPE portrait_merges_total counter") == 1


def applied_total(settings: Settings) -> int:
    client = raw_client(settings.redis_url)
    keys = list(client.scan_iter(f"{settings.redis_key_prefix}c:*:p", count=1000))
    return sum(int(client.hget(key, "c:events_total") or 0) for key in keys)


def test_worker_killed_mid_stream_loses_and_doubles_nothing(
    stack_settings: Settings, tmp_path: Path, worker: StartWorker
) -> None:
    settings = stack_settings.model_copy(update={"batch_max_events": 100})
    customers, total = 40, 6000
    events = [
        chan(
            f"k{i}",
            f"2026-11-0{1 + i % 9}T1{i % 10}:00:00+08:00",
            ["app", "web"][i % 2],
            {"im_id": f"A{i % customers}"},
            seq=i,
        )
        for i in range(total)
    ]
    produce(settings, events)
    with worker(settings, tmp_path / "w1.log") as first:
        wait_for(lambda: applied_total(settings) > 0, what="first batch")
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    at_kill = applied_total(settings)
    assert 0 < at_kill < total, "the kill should land mid-stream"
    with worker(settings, tmp_path / "w2.log"):
        wait_for(lambda: applied_total(settings) >= total, timeout=120, what="all events")
        time.sleep(1)  # anything applied twice would show up now
    assert applied_total(settings) == total
    for c in range(0, customers, 7):
        _, body, _ = profile_get(settings, "--im-id", f"A{c}")
        assert body is not None and body["stats"]["events_total"] == total // customers
        assert body["version"] == total // customers
    changed = outputs(settings, "profile-changes")
    assert {c["source_event_id"] for c in changed} == {e["event_id"] for e in events}


def test_erase_command_removes_every_trace(
    stack_settings: Settings, tmp_path: Path, worker: StartWorker
) -> None:
    settings = stack_settings
    produce(
        settings,
        [
            chan(
                "x1",
                "2026-11-01T09:00:00+08:00",
                "app",
                {"phone": "13700000001", "account_no": "ERASE-1"},
                name="王五",
            ),
            chat(
                "x2",
                "2026-11-01T10:00:00+08:00",
                {"im_id": "wx-erase", "phone": "13700000001"},
                "请问怎么注销",
            ),
            event(
                "x3",
                "relation.changed",
                "2026-11-01T11:00:00+08:00",
                "wecom",
                {"im_id": "wx-erase"},
                {"employee_id": "emp-9", "relation": "friend", "action": "added"},
            ),
        ],
    )
    with worker(settings, tmp_path / "worker.log"):

        def built() -> bool:
            _, body, _ = profile_get(settings, "--im-id", "wx-erase")
            return body is not None and body["stats"]["events_total"] == 3

        wait_for(built, what="profile to erase")
        cid = profile_get(settings, "--phone", "13700000001")[1]["customer_id"]  # type: ignore[index]
        done = subprocess.run(
            [*PORTRAIT, "erase", "--account-no", "ERASE-1"],
            env=settings_env(settings),
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        wait_for(lambda: profile_get(settings, "--im-id", "wx-erase")[0] == 1, what="erasure")
    erased = [c for c in outputs(settings, "profile-changes") if c["type"] == "profile.erased"]
    assert [e["customer_id"] for e in erased] == [cid]
    client = raw_client(settings.redis_url)
    leftovers = []
    for key in client.scan_iter(f"{settings.redis_key_prefix}*"):
        blob = key + repr(client.dump(key)).encode()
        if any(s in blob for s in (cid.encode(), b"13700000001", b"wx-erase", b"ERASE-1")):
            leftovers.append(key)
    assert leftovers == []
