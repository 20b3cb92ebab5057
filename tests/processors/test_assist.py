from typing import Any

import pytest

from portrait.events import INPUT_EVENT_ADAPTER, InputEvent
from processors.assist import (
    AssistSettings,
    CallAdvice,
    ProductStats,
    PromptTemplates,
    advice_kind,
    call_session_delta,
    chat_response,
    feedback_counts,
    language_of,
    parse_stats,
    phase_for_offset,
    product_fields,
    products_document,
    prompt_reasons,
    rank_products,
    stats_field,
)
from tests.support.envelopes import event


@pytest.mark.parametrize(
    ("offset", "phase"),
    [
        (0, "opening"),
        (29_999, "opening"),
        (30_000, "discovery"),
        (119_999, "discovery"),
        (120_000, "proposal"),
        (299_999, "proposal"),
        (300_000, "closing"),
        (10**9, "closing"),
    ],
)
def test_phase_boundaries(offset: int, phase: str) -> None:
    assert phase_for_offset(offset) == phase


def test_boundaries_are_configurable() -> None:
    assert phase_for_offset(15_000, AssistSettings(boundaries_ms=(10_000, 20_000, 40_000))) == (
        "discovery"
    )


STATS = {
    "proposal": {
        "solar": ProductStats(offers=10, accepted=6),  # 7/12 = 0.583
        "tariff": ProductStats(offers=4, accepted=3),  # 4/6 = 0.667
        "meter": ProductStats(offers=4, accepted=3),  # ties with tariff: by name
        "new": ProductStats(offers=2, accepted=2),  # too few offers
        "dud": ProductStats(offers=20, accepted=1),  # 2/22 below 0.3
    }
}


def test_ranking_keeps_proven_products_best_first() -> None:
    ranked = rank_products("proposal", STATS)
    assert [p for p, _ in ranked] == ["meter", "tariff", "solar"]
    assert ranked[0][1] == pytest.approx(4 / 6)
    assert rank_products("opening", STATS) == []


def test_thresholds_are_configurable() -> None:
    strict = AssistSettings(min_offers=5, min_rate=0.5)
    assert [p for p, _ in rank_products("proposal", STATS, strict)] == ["solar"]
    lenient = rank_products("proposal", STATS, AssistSettings(min_offers=2))
    assert lenient[0][0] == "new"  # 3/4 once two offers are enough


def test_emotion_decides_the_kind() -> None:
    assert advice_kind("positive") == "recommend_product"
    assert advice_kind("neutral") == "introduce_or_answer"
    assert advice_kind("negative") == "soothe_and_close"


def segment(speaker: str, offset_ms: int | None) -> InputEvent:
    payload: dict[str, Any] = {"call_id": "c1", "seq": 4, "speaker": speaker, "text": "好的"}
    if offset_ms is not None:
        payload["offset_ms"] = offset_ms
    raw = event(
        "e1", "call.segment", "2026-11-01T10:00:00+08:00", "hotline", {"phone": "1"}, payload
    )
    return INPUT_EVENT_ADAPTER.validate_python(raw)


def test_customer_turn_carries_phase_and_ranked_candidates() -> None:
    call = call_session_delta(segment("customer", 150_000), "positive", STATS)
    assert call is not None
    assert (call["id"], call["seq"], call["phase"], call["kind"]) == (
        "c1",
        4,
        "proposal",
        "recommend_product",
    )
    assert [c[0] for c in call["candidates"]] == ["meter", "tariff", "solar"]
    assert call["decline_ms"] == 30 * 86_400_000


def test_agent_turn_updates_the_session_but_asks_for_no_advice() -> None:
    call = call_session_delta(segment("agent", 40_000), None, STATS)
    assert call is not None and call["phase"] == "discovery"
    assert "kind" not in call and "emotion" not in call


def test_negative_turn_needs_no_candidates() -> None:
    call = call_session_delta(segment("customer", None), "negative", STATS)
    assert call is not None
    assert (call["phase"], call["kind"], call["candidates"]) == ("opening", "soothe_and_close", [])


def test_chat_response_soothes_or_escalates() -> None:
    assert chat_response("neutral", 5, 0.9) is None
    assert chat_response("negative", 1, 0.2) == (
        "soothe_and_close",
        ["customer message is negative"],
    )
    kind, reasons = chat_response("negative", 3, 0.2) or ("", [])
    assert kind == "escalate" and "3 negative messages in a row" in reasons
    assert (chat_response("negative", 1, 0.75) or ("",))[0] == "escalate"
    assert chat_response("negative", 3, None, AssistSettings(escalate_streak=4)) == (
        "soothe_and_close",
        ["customer message is negative"],
    )


def test_products_held_or_declined() -> None:
    fields = product_fields(
        ["solar", {"product": "meter"}, {"sku": 1}, "bad\tname"], "held", 5, "e"
    )
    assert sorted(fields) == ["r:prod:meter", "r:prod:solar"]
    document = products_document({k[2:]: str(v) for k, v in fields.items()} | {"calm": "x"})
    assert document == [
        {"product": "meter", "status": "held"},
        {"product": "solar", "status": "held"},
    ]


def test_prompt_text_is_in_the_customer_language_and_names_the_product() -> None:
    templates = PromptTemplates.load()
    assert language_of("我想办理") == "zh" and language_of("I want it") == "en"
    zh = templates.render("call", "recommend_product", "zh", "smart_meter", 0.6)
    assert "smart_meter" in zh and "手机" in zh
    en = templates.render("call", "recommend_product", "en", "unknown_plan", 0.62)
    assert "unknown_plan" in en and "62%" in en  # no selling point: the measured rate
    assert "apologise" in templates.render("chat", "soothe_and_close", "en", None, None)
    for channel, kinds in templates.templates.items():
        for kind, by_language in kinds.items():
            assert {"zh", "en"} <= set(by_language), (channel, kind)


def test_call_prompt_reasons() -> None:
    advice = CallAdvice("recommend_product", "solar", 0.583, "a1", "proposal")
    assert prompt_reasons(advice, "positive") == [
        "customer is positive",
        "solar succeeds 58% of the time in the proposal phase",
    ]
    fallback = CallAdvice("introduce_or_answer", None, None, "a1", "opening")
    assert "no proven product" in prompt_reasons(fallback, "positive")[1]


def test_feedback_counts_and_parsing_round_trip() -> None:
    assert feedback_counts("proposal", "solar", "accepted") == {
        stats_field("offers", "proposal", "solar"): 1,
        stats_field("accepted", "proposal", "solar"): 1,
    }
    assert feedback_counts("proposal", "solar", "declined") == {
        stats_field("offers", "proposal", "solar"): 1
    }
    assert feedback_counts(None, "solar", "accepted") == {}
    raw = {
        stats_field("offers", "proposal", "solar"): "4",
        stats_field("accepted", "proposal", "solar"): "3",
    }
    assert parse_stats(raw) == {"proposal": {"solar": ProductStats(4, 3)}}
