"""Facts from chat text and images through the batch pipeline, with a real Redis."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import orjson
import pytest

from portrait.config import Settings
from processors.document import document_settings
from state.stores import store_for
from streams.lookup import profile_by_id
from streams.testing import ListSink, input_records
from tests.support.envelopes import event, media_chat, settings_env
from tests.support.images import ZH_CARD, card_b64
from tests.support.pipeline import RunBatch
from tests.support.worker import PORTRAIT


def profile(settings: Settings, sink: ListSink) -> dict[str, Any]:
    """The stored profile document of the customer the batch changed."""
    [customer_id] = {e["customer_id"] for e in sink.events() if e["type"] == "profile.changed"}

    async def load() -> dict[str, Any]:
        store = store_for(settings)
        try:
            found = await profile_by_id(store, customer_id, None, document_settings(settings))
        finally:
            await store.close()
        assert found is not None
        return found

    return asyncio.run(load())


def attributes(settings: Settings, sink: ListSink) -> dict[str, Any]:
    return dict(profile(settings, sink)["attributes"])


def test_card_image_and_text_facts_become_attributes(
    redis_settings: Settings, run_batch: RunBatch
) -> None:
    sink = ListSink()
    events = [
        media_chat(
            "f1", "2026-11-20T10:00:00+08:00", images=[card_b64(ZH_CARD), "bm90IGFuIGltYWdl"]
        ),
        media_chat("f2", "2026-11-20T10:05:00+08:00", "我的生日是1988年8月8日，我住在上海"),
    ]
    outcome = run_batch(redis_settings, input_records("t.chat", events), sink)
    assert outcome.outcomes == {("t.chat", "ok"): 2}  # the unreadable image does not stop f1
    [dlq] = [e for e in sink.events() if e["type"] == "dlq.record"]
    assert dlq["reason"] == "image_undecodable: image 1 image_undecodable"
    assert dlq["offset"] == 0
    found = attributes(redis_settings, sink)
    assert {name: a["value"] for name, a in found.items()} == {
        "name": "王小明",
        "company": "杭州阿里巴巴网络技术有限公司",
        "phone": "13812345678",
        "email": "wxm@alibaba.com",
        "city": "上海",  # the newer extraction (text, f2) replaced the card's 杭州
        "birthday": "1988-08-08",
    }
    assert found["name"]["source"] == "ocr" and found["birthday"]["source"] == "nlp"
    assert found["city"]["updated_at"].startswith("2026-11-20T02:05")
    assert 0.5 < found["city"]["confidence"] < found["phone"]["confidence"] <= 1.0
    # an extracted phone is an attribute only: it joined no identity
    assert profile(redis_settings, sink)["identifiers"]["phone"] == []


def test_a_manual_value_is_never_overridden(redis_settings: Settings, run_batch: RunBatch) -> None:
    edit = event(
        "m1",
        "profile.edited",
        "2026-11-20T09:00:00+08:00",
        "crm",
        {"im_id": "wx-facts"},
        {"editor_id": "emp-1", "set": {"name": "王晓明"}},
    )
    sink = ListSink()
    run_batch(
        redis_settings,
        input_records(
            "t.chat", [edit, media_chat("f3", "2026-11-20T10:00:00+08:00", "你好，我叫王小明")]
        ),
        sink,
    )
    name = attributes(redis_settings, sink)["name"]
    assert (name["value"], name["source"]) == ("王晓明", "manual")


def test_linking_extracted_identities_is_configuration(
    redis_settings: Settings, run_batch: RunBatch
) -> None:
    settings = redis_settings.model_copy(update={"facts_link_identities": True})
    sink = ListSink()
    run_batch(
        settings,
        input_records("t.chat", [media_chat("f4", "2026-11-20T10:00:00+08:00", "电话13900001111")]),
        sink,
    )
    assert profile(settings, sink)["identifiers"]["phone"] == ["+8613900001111"]


def test_keywords_intents_and_needs_build_up(redis_settings: Settings, run_batch: RunBatch) -> None:
    sink = ListSink()
    texts = [
        "又停电了，冰箱里的东西都坏了",
        "停电第二次了，什么时候恢复供电",
        "我交电费晚了，有滞纳金吗",
    ]
    events = [
        media_chat(f"k{i}", f"2026-11-2{i}T10:00:00+08:00", text) for i, text in enumerate(texts, 1)
    ]
    run_batch(redis_settings, input_records("t.chat", events), sink)
    doc = profile(redis_settings, sink)
    assert doc["intents"] == {"outage": 2, "payment": 1}
    # mentioned one and two days before the latest event, with a 30-day half-life
    weight = 2 ** (-1 / 30) + 2 ** (-2 / 30)
    assert doc["keywords"][0] == {"term": "停电", "weight": pytest.approx(weight, abs=1e-4)}
    assert {"冰箱", "滞纳金", "电费"} <= {k["term"] for k in doc["keywords"]}
    assert [n["need"] for n in doc["needs"]] == ["outage_sms_alerts", "autopay"]
    # the second outage message is the one that made outage SMS alerts a need
    changes = [e for e in sink.events() if e["type"] == "profile.changed"]
    needs_changes = [
        (e["source_event_id"], c["new"])
        for e in changes
        for c in e["changed"]
        if c["field"] == "needs"
    ]
    assert [eid for eid, _ in needs_changes] == ["k2", "k3"]


def test_problems_with_resolutions_and_the_problems_command(
    redis_settings: Settings, run_batch: RunBatch
) -> None:
    ended = event(
        "pe",
        "call.ended",
        "2026-11-20T12:00:00+08:00",
        "hotline",
        {"im_id": "wx-facts"},
        {"call_id": "call-1", "outcome": "resolved"},
    )
    events = [
        media_chat("pb1", "2026-11-20T10:00:00+08:00", "又停电了，冰箱里的东西都坏了"),
        media_chat("pb2", "2026-11-20T11:00:00+08:00", "我要投诉，你们客服态度太差了"),
        ended,
        media_chat("pb3", "2026-11-21T09:00:00+08:00", "账单上多扣了我两百块钱"),
        media_chat("pb4", "2026-11-21T09:30:00+08:00", "谢谢你们"),  # not a problem
    ]
    run_batch(redis_settings, input_records("t.chat", events), sink := ListSink())
    problems = profile(redis_settings, sink)["problems"]
    assert [(p["event_id"], p["intent"]) for p in problems] == [
        ("pb3", "billing"),
        ("pb2", "complaint"),
        ("pb1", "outage"),
    ]
    assert problems[0]["resolution"] is None
    assert problems[1]["resolution"]["outcome"] == "resolved"
    assert problems[2]["resolution"]["event_id"] == "pe"
    done = subprocess.run(
        [*PORTRAIT, "problems", "--im-id", "wx-facts", "--like", "家里没电了", "--json"],
        env=settings_env(redis_settings),
        capture_output=True,
        check=True,
        timeout=120,
    )
    similar = orjson.loads(done.stdout)
    assert len(similar) == 3 and similar[0]["event_id"] == "pb1"
