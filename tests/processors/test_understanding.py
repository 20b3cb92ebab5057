"""Keywords, intents and latent needs: the pure parts."""

from __future__ import annotations

from typing import Any

import pytest

from models.emotion import default_model
from processors.intents import IntentMatcher, IntentTable, intents_document
from processors.keywords import keywords_document, load_stopwords, terms
from processors.needs import load_rules, needs

STOP = load_stopwords()


def test_terms_drop_stop_words_and_short_tokens() -> None:
    assert terms("你好，我想问一下电费账单为什么这么高", STOP) == ["电费", "账单"]
    assert terms("Why is my electricity bill so high? It's the bill again", STOP) == [
        "electricity",
        "bill",
        "high",
    ]
    assert terms("停电 power cut 停电", STOP) == ["停电", "power", "cut"]
    assert terms("好的 ok 谢谢", STOP) == []


def test_keyword_weights_read_as_mentions_at_the_latest_event() -> None:
    # stored decayed weights: 2 recent mentions of 停电, 1 of 账单, a half-life-old 账单
    stored = {"kw:停电": "8.0", "kw:账单": "6.0", "ch:app": "99", "kw:光伏": "1.0"}
    assert keywords_document(stored, latest_weight=4.0, top_k=2) == [
        {"term": "停电", "weight": 2.0},
        {"term": "账单", "weight": 1.5},
    ]
    assert keywords_document(stored, 4.0, top_k=0) == []


@pytest.fixture(scope="module")
def matcher() -> IntentMatcher:
    return IntentMatcher(IntentTable.load(), default_model().encoder, 0.5)


def test_intents_in_both_languages(matcher: IntentMatcher) -> None:
    texts = [
        "怎么又停电了，今天第二次了",
        "There's been a blackout on my street since noon",
        "我的账单多扣了50块",
        "I'd like to close my account please",
        "我想了解一下屋顶光伏",
        "Someone needs to fix my broken boiler",
        "你好",
        "今天天气不错",
    ]
    found = matcher.match(default_model().encoder.encode(texts))
    assert found == [
        "outage",
        "outage",
        "billing",
        "cancellation",
        "product_interest",
        "repair",
        None,
        None,
    ]


def test_intent_counts_most_frequent_first() -> None:
    assert intents_document({"in:billing": "1", "in:outage": "3", "events_total": "9"}) == {
        "outage": 3,
        "billing": 1,
    }


def test_needs_follow_the_rule_table() -> None:
    rules = load_rules()

    def customer(
        intents: dict[str, int], keywords: list[str], credit: float, streak: int
    ) -> list[dict[str, str]]:
        return needs(
            rules, intents, keywords.__contains__, lambda: {"credit": credit}, lambda: streak
        )

    assert customer({"outage": 1}, [], 0.9, 0) == []
    assert customer({"outage": 2}, [], 0.9, 0) == [
        {"need": "outage_sms_alerts", "reason": "asked about outages repeatedly"}
    ]
    late = customer({"payment": 1}, ["滞纳金"], 0.2, 0)
    assert [n["need"] for n in late] == ["autopay", "payment_plan"]
    assert late[0]["reason"] == "mentioned late fees"
    assert customer({"complaint": 1}, [], 0.9, 1) == []  # one negative is not "still upset"
    assert customer({"complaint": 1}, [], 0.9, 2)[0]["need"] == "service_recovery"


def test_needs_build_only_what_a_rule_reaches() -> None:
    def unreachable() -> Any:
        raise AssertionError("built without need")

    rules = [{"need": "n", "reason": "r", "intent": "outage", "indicator": "credit", "below": 1}]
    assert needs(rules, {}, unreachable, unreachable, unreachable) == []


def test_function_words_and_filler_are_never_keywords() -> None:
    said = ["请问这个套餐每个月多少钱", "你们太差劲了，我非常生气", "我想了解一下宽带业务"]
    found = [term for text in said for term in terms(text, STOP)]
    assert found == ["套餐", "差劲", "生气", "宽带", "业务"]
    for filler in ("每个", "多少", "了解", "一下", "已经", "这个"):
        assert filler not in found
    english = terms("Um, well, I actually just want to basically cancel my broadband", STOP)
    assert english == ["cancel", "broadband"]
