"""The customer-feature model, its simulator, the feature vector and the priority rule."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from models.customer_model import (
    ARTIFACTS,
    CARD,
    CustomerScores,
    default_customer_model,
    priority_tier,
    r2_by_target,
)
from models.customer_sim import TARGETS, simulate
from models.scorer import score_sections
from processors.document import EMPTY_SCORES
from processors.features import FEATURES, feature_vector
from processors.layout import sections_of


def test_simulator_is_deterministic_and_shaped() -> None:
    x1, y1 = simulate(200, seed=5)
    x2, y2 = simulate(200, seed=5)
    assert np.array_equal(x1, x2, equal_nan=True) and np.array_equal(y1, y2)
    assert x1.shape == (200, len(FEATURES)) and y1.shape == (200, len(TARGETS))
    assert np.isnan(x1).any() and ((y1 >= 0) & (y1 <= 1)).all()


def test_shipped_model_scores_unseen_simulated_customers_as_its_card_says() -> None:
    card = json.loads((ARTIFACTS / CARD).read_text(encoding="utf-8"))
    x, y = simulate(3000, seed=12345)
    scores = default_customer_model().score(x)
    predicted = np.array([[s.value, s.loyalty, s.churn_risk] for s in scores])
    for name, r2 in zip(TARGETS, r2_by_target(predicted, y), strict=True):
        assert r2 >= card["metrics_held_out"][name]["r2"] - 0.05, name
        assert r2 > 0.5, name


def test_more_complaints_mean_more_churn_risk() -> None:
    base = np.nanmedian(simulate(2000, seed=3)[0], axis=0)
    calm, angry = base.copy(), base.copy()
    angry[FEATURES.index("complaints")] = 8
    angry[FEATURES.index("emotion_average")] = -0.8
    low, high = default_customer_model().score(np.stack([calm, angry]))
    assert high.churn_risk > low.churn_risk + 0.1


def test_feature_vector_from_state() -> None:
    day = 86_400_000
    sections = sections_of(
        {
            "m:first_seen": "0",
            "m:last_seen": str(14 * day),
            "c:events_total": "6",
            "c:ch:app": "3",
            "c:ch:web": "3",
            "c:act:complaint": "2",
            "c:act:bill_paid": "3",
            "c:act:bill_overdue": "1",
            "e:w": "2.0",
            "e:wv": "-1.0",
            "e:amount": "99.0",
        }
    )
    vector = dict(zip(FEATURES, feature_vector(sections).tolist(), strict=True))
    assert vector["events_per_week"] == pytest.approx(3.0)
    assert vector["channel_entropy"] == pytest.approx(1.0)
    assert vector["emotion_average"] == pytest.approx(-0.5)
    assert vector["on_time_ratio"] == pytest.approx(0.75)
    assert vector["complaints"] == 2 and vector["log_amount"] == pytest.approx(math.log(100))
    assert math.isnan(vector["campaign_response"])  # never offered a campaign


@pytest.mark.parametrize(
    ("value", "churn", "last", "streak", "tier"),
    [
        (0.8, 0.7, None, 0, "urgent"),
        (0.1, 0.1, "negative", 3, "urgent"),
        (0.75, 0.2, None, 0, "high"),
        (0.3, 0.65, None, 0, "high"),
        (0.55, 0.2, "negative", 1, "high"),
        (0.1, 0.2, None, 0, "low"),
        (0.1, 0.2, "negative", 1, "normal"),
        (0.4, 0.4, "neutral", 0, "normal"),
    ],
)
def test_priority_rule(
    value: float, churn: float, last: str | None, streak: int, tier: str
) -> None:
    assert priority_tier(CustomerScores(value, 0.5, churn), last, streak) == tier


def test_scores_document_names_the_model_version() -> None:
    sections = sections_of({"c:events_total": "1", "m:first_seen": "0", "m:last_seen": "0"})
    [document] = score_sections(default_customer_model(), [sections])
    assert set(document) == set(EMPTY_SCORES)
    assert document["model_version"] == default_customer_model().version
    assert document["priority"] in {"low", "normal", "high", "urgent"}
    assert score_sections(None, [sections]) == [EMPTY_SCORES]
