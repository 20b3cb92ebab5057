import pytest

from processors.assist import (
    AssistSettings,
    ProductStats,
    choose_advice,
    feedback_counts,
    parse_stats,
    phase_for_offset,
    stats_field,
)


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
        "new": ProductStats(offers=2, accepted=2),  # too few offers
        "dud": ProductStats(offers=20, accepted=1),  # 2/22 below 0.3
    }
}


def test_positive_recommends_the_best_proven_product() -> None:
    advice = choose_advice("positive", "proposal", STATS)
    assert (advice.kind, advice.product) == ("recommend_product", "tariff")
    assert "67%" in advice.reasons[1]


def test_declined_or_held_products_are_skipped_and_else_introduce() -> None:
    assert choose_advice("positive", "proposal", STATS, skip=["tariff"]).product == "solar"
    fallback = choose_advice("positive", "proposal", STATS, skip=["tariff", "solar"])
    assert (fallback.kind, fallback.product) == ("introduce_or_answer", None)
    assert choose_advice("positive", "opening", STATS).kind == "introduce_or_answer"


def test_neutral_and_negative() -> None:
    assert choose_advice("neutral", "proposal", STATS).kind == "introduce_or_answer"
    assert choose_advice("negative", "proposal", STATS).kind == "soothe_and_close"


def test_thresholds_are_configurable() -> None:
    strict = AssistSettings(min_offers=5, min_rate=0.6)
    assert choose_advice("positive", "proposal", STATS, settings=strict).kind == (
        "introduce_or_answer"
    )


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
