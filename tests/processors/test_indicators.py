import math

import pytest

from processors.indicators import indicators
from processors.layout import sections_of
from processors.preferences import DECAY_EPOCH_MS, decay_weight

DAY = 86_400_000


def test_indicator_formulas() -> None:
    last = DECAY_EPOCH_MS + 400 * DAY
    now_weight = decay_weight(last, 30.0)
    half_life_ago = decay_weight(last - 30 * DAY, 30.0)
    sections = sections_of(
        {
            "m:last_seen": str(last),
            "d:ch:app": repr(now_weight),
            "d:ch:web": repr(half_life_ago),
            "d:emp:x": "999",  # interactions with employees are not activity
            "c:act:bill_paid": "3",
            "c:act:bill_overdue": "1",
            "c:act:campaign_joined": "1",
            "c:act:campaign_ignored": "3",
            "c:act:share": "4",
            "r:friend:e1": "000000000000001|a\tadded",
            "r:friend:e2": "000000000000001|b\tremoved",
        }
    )
    result = indicators(sections, 30.0)
    assert result["activity"] == pytest.approx(1.5, abs=1e-3)
    assert result["credit"] == 0.75
    assert result["campaign_participation"] == 0.25
    assert result["influence"] == round(1 - math.exp(-0.5), 4)  # 4 shares + 1 active friend
    assert result["wealth"] is None


def test_indicators_are_empty_without_evidence() -> None:
    result = indicators(sections_of({}), 30.0)
    assert result == {
        "activity": None,
        "credit": None,
        "wealth": None,
        "campaign_participation": None,
        "influence": 0.0,
    }


def test_customers_below_a_bucket_are_counted_whatever_the_buckets() -> None:
    import random

    from processors.indicators import Population

    rng = random.Random(7)
    for _ in range(300):
        counts = {rng.randrange(60): rng.randrange(1, 9) for _ in range(rng.randrange(30))}
        population = Population.of({str(b): n for b, n in counts.items()})
        for bucket in range(-1, 62):
            assert population.below(bucket) == sum(n for b, n in counts.items() if b < bucket)
