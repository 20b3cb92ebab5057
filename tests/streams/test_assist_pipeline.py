"""Agent assist through the batch pipeline, with a real Redis and the real emotion model."""

from __future__ import annotations

from typing import Any

import orjson

from portrait.config import Settings
from portrait.events import OUTPUT_MODELS
from processors.layout import STRIPE
from streams.records import InputRecord
from streams.testing import ListSink
from tests.support.envelopes import (
    ANGRY_EN,
    HAPPY_EN,
    HISTORY,
    TURNS,
    at,
    call,
    event,
    feedback,
)
from tests.support.pipeline import RunBatch
from tests.support.state import raw_client


def batch(events: list[dict[str, Any]]) -> list[InputRecord]:
    # the same Kafka timestamp for all: latency_ms is measured from it
    return [
        InputRecord("t.calls", 0, i, b"k", orjson.dumps(e), timestamp_ms=1.0)
        for i, e in enumerate(events)
    ]


def prompts(sink: ListSink) -> list[dict[str, Any]]:
    return [e for e in sink.events() if e["type"] == "agent.prompt"]


def test_a_call_prompts_whenever_its_advice_changes(
    redis_settings: Settings, run_batch: RunBatch
) -> None:
    sink = ListSink()
    run_batch(redis_settings, batch(HISTORY + call("c1", {"phone": "138"}, TURNS)), sink)
    got = prompts(sink)
    assert [(p["kind"], p["product"], p["phase"], p["source_event_id"]) for p in got] == [
        ("introduce_or_answer", None, "opening", "c1-1"),
        ("recommend_product", "smart_meter", "proposal", "c1-3"),
        ("soothe_and_close", None, "proposal", "c1-5"),
    ]
    for prompt in got:
        OUTPUT_MODELS["agent.prompt"].model_validate(prompt)
        assert prompt["agent_id"] == "agent-li" and prompt["call_id"] == "c1"
        assert prompt["latency_ms"] > 0
    assert "smart_meter" in got[1]["text"] and "手机" in got[1]["text"]  # Chinese, with a pitch
    assert got[1]["reasons"][1] == "smart_meter succeeds 67% of the time in the proposal phase"
    assert [r.key for r in sink.records if r.topic == redis_settings.topic("agent-prompts")] == [
        b"agent-li"
    ] * 3


def test_held_and_declined_products_are_skipped(
    redis_settings: Settings, run_batch: RunBatch
) -> None:
    holder = {"phone": "139"}
    bought = event(
        "buy",
        "channel.event",
        at(0),
        "app",
        holder,
        {"action": "purchase", "items": [{"product": "smart_meter"}]},
    )
    declined = feedback("f-x", "green_tariff", "declined", phase="discovery")
    declined["customer"] = holder
    turns = [("customer", HAPPY_EN, 150)]
    sink = ListSink()
    run_batch(redis_settings, batch([*HISTORY, bought, *call("c2", holder, turns)]), sink)
    [first] = prompts(sink)
    assert (first["product"], first["text"].startswith("The customer sounds positive")) == (
        "green_tariff",
        True,
    )
    sink = ListSink()
    run_batch(redis_settings, batch([declined, *call("c3", holder, turns)]), sink)
    [second] = prompts(sink)  # nothing proven is left for this customer
    assert (second["kind"], second["product"]) == ("introduce_or_answer", None)
    assert "no proven product" in second["reasons"][1]


def test_a_redelivered_batch_re_emits_its_prompts_with_the_same_ids(
    redis_settings: Settings,
    run_batch: RunBatch,
) -> None:
    events = HISTORY + call("c4", {"phone": "140"}, TURNS)
    failing = ListSink(failures=1)  # the first delivery fails after the state was applied
    run_batch(redis_settings, batch(events), failing)
    again = ListSink()  # the worker died before acking: Kafka redelivers the batch
    run_batch(redis_settings, batch(events), again)
    first = [(p["prompt_id"], p["kind"]) for p in prompts(failing)]
    assert [kind for _, kind in first] == [
        "introduce_or_answer",
        "recommend_product",
        "soothe_and_close",
    ]
    assert prompts(again) == []  # delivered and confirmed: nothing twice


def test_chat_soothes_then_escalates_a_negative_streak(
    redis_settings: Settings, run_batch: RunBatch
) -> None:
    def chat(eid: str, text: str, second: int) -> dict[str, Any]:
        payload = {
            "conversation_id": "conv-9",
            "direction": "inbound",
            "employee_id": "emp-7",
            "text": text,
        }
        return event(eid, "chat.message", at(second), "wecom", {"im_id": "wx9"}, payload)

    sink = ListSink()
    messages = [
        chat("m1", HAPPY_EN, 1),
        chat("m2", ANGRY_EN, 2),
        chat("m3", ANGRY_EN + "!", 3),
        chat("m4", ANGRY_EN + "!!", 4),
    ]
    run_batch(redis_settings, batch(messages), sink)
    got = prompts(sink)
    assert [(p["source_event_id"], p["kind"]) for p in got] == [
        ("m2", "soothe_and_close"),
        ("m3", "soothe_and_close"),
        ("m4", "escalate"),
    ]
    assert got[0]["agent_id"] == "emp-7" and got[0]["conversation_id"] == "conv-9"
    assert got[0]["phase"] is None and "apologise" in got[0]["text"]
    assert "3 negative messages in a row" in got[2]["reasons"]


def test_erasure_removes_call_sessions(redis_settings: Settings, run_batch: RunBatch) -> None:
    customer = {"phone": "141"}
    run_batch(redis_settings, batch(call("c5", customer, TURNS[:1])), ListSink())
    client = raw_client(redis_settings.redis_url)
    pattern = f"{redis_settings.redis_key_prefix}c:*:call*"
    assert len(list(client.scan_iter(pattern))) == 2  # the session and the list of calls
    erase = event("x", "customer.erasure", at(500), "crm", customer, {})
    run_batch(redis_settings, batch([erase]), ListSink())
    customers = f"{redis_settings.redis_key_prefix}*{{*"
    shared = f"{redis_settings.redis_key_prefix}{{{STRIPE}".encode()  # a cluster's counters
    assert [k for k in client.scan_iter(customers) if not k.startswith(shared)] == []
