"""Stance cues and the final clause, without the model."""

from __future__ import annotations

import pytest

from models.emotion import load_cues
from processors.stance import CUE_FEATURES

CUES = load_cues()


def _features(text: str) -> dict[str, float]:
    return dict(zip(CUE_FEATURES, CUES.features(text, CUES.final_clause(text)), strict=True))


@pytest.mark.parametrize(
    ("text", "tail"),
    [
        ("I was furious yesterday, but the refund just arrived. Thank you!", "but the refund"),
        ("本来气得想销户，后来客服帮我查清楚了，谢谢你们", "后来客服帮我查清楚了，谢谢你们"),
        (
            "I was ready to cancel. Consider me a happy customer again.",
            "Consider me a happy customer again",
        ),
        ("Wow, two weeks to reply. Impressive.", None),  # one word: not a stance of its own
        ("你们太差劲了", None),
        ("诈骗电话一般在哪里举报", None),
    ],
)
def test_the_final_clause_follows_the_last_turn_or_sentence(text: str, tail: str | None) -> None:
    found = CUES.final_clause(text)
    assert (found is None) if tail is None else (found is not None and found.startswith(tail[:4]))


def test_cues_count_slang_emoji_negated_complaints_and_relief() -> None:
    assert _features("这个新套餐真的yyds")["cue_positive"] > 0
    assert _features("Your support is goated")["cue_positive"] > 0
    assert _features("I've got no complaints")["cue_positive"] > 0
    assert _features("呼，原来是自动续费，不是被盗刷")["cue_positive"] > 0
    assert _features("收到了👍")["cue_positive"] > 0
    assert _features("😡😡😡")["cue_negative"] == 1.0
    assert _features("真的破防了")["cue_negative"] > 0
    assert _features("I'm not happy with this")["cue_negative"] > 0
    # English cues are words: "mid" is not in "midnight", "lit" not in "split"
    assert _features("the midnight outage split the bill")["cue_negative"] == 0
    assert _features("the midnight outage split the bill")["cue_positive"] == 0


def test_information_requests_are_questions_without_anger() -> None:
    for asking in (
        "How do I report a scam call?",
        "If my card gets stolen abroad, who should I call?",
        "诈骗电话一般在哪里举报",
        "燃气泄漏报警器响了应该打哪个电话",
        "明天的appointment可以改到下午吗",
    ):
        assert _features(asking)["information_request"] == 1.0, asking
    for telling in ("Great, another outage. Just what I needed.", "服务太差了", "Thanks a lot"):
        assert _features(telling)["information_request"] == 0.0, telling
    for angry in ("Why on earth does it take three weeks?!", "凭什么又涨价？"):
        found = _features(angry)
        assert found["information_request"] == 0.0 and found["cue_negative"] > 0, angry
