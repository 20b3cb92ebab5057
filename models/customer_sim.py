"""A synthetic customer simulator — the training data of the customer-feature model.

**Everything here is synthetic.** No real customer data exists for this project, so the
customer-feature model learns the relations this simulator assumes, and its scores are
only as right as these assumptions:

- Each customer has four hidden traits in 0…1: *engagement* (how often they interact),
  *satisfaction*, *means* (spending power, log-normal) and *commitment* (tendency to stay).
- Observed behaviour follows from the traits: events per week ∝ engagement; channels used
  grow with engagement; emotion valence ≈ 2·satisfaction − 1 plus noise; complaints and
  negative streaks are more likely when satisfaction is low; bills are paid on time with
  probability rising with means and commitment; campaign response rises with engagement
  and satisfaction; purchases and amounts rise with means and engagement; shares with
  satisfaction and engagement. About 20 % of each optional feature is missing (NaN), as
  for customers without bills or campaigns.
- Targets: ``value`` = spend and purchases (means × engagement); ``loyalty`` = commitment,
  tenure and satisfaction; ``churn_risk`` = low satisfaction, complaints, overdue bills,
  low commitment and inactivity — each squashed to 0…1 with a logistic.

The generator is deterministic for a seed.
"""

from __future__ import annotations

import numpy as np

from processors.features import FEATURES

TARGETS: tuple[str, ...] = ("value", "loyalty", "churn_risk")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)))


def simulate(count: int, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """``count`` customers: features (``FEATURES`` columns, NaN = missing) and targets."""
    rng = np.random.default_rng(seed)
    engagement = rng.beta(2.0, 2.5, count)
    satisfaction = rng.beta(3.0, 2.0, count)
    means = np.clip(rng.lognormal(0.0, 0.6, count) / 3.0, 0.0, 1.0)
    commitment = rng.beta(2.5, 2.0, count)

    days = rng.uniform(1, 720, count) * (0.3 + 0.7 * commitment)
    per_week = rng.gamma(1.0 + 6.0 * engagement, 0.6)
    events = np.maximum(1, np.round(per_week * np.maximum(days / 7.0, 1.0)))
    channels = np.clip(np.round(1 + 5 * engagement + rng.normal(0, 0.8, count)), 1, 7)
    entropy = np.log2(channels) * rng.uniform(0.5, 1.0, count)
    valence = np.clip(2 * satisfaction - 1 + rng.normal(0, 0.25, count), -1, 1)
    streak = rng.poisson(3.0 * (1 - satisfaction) ** 2)
    complaints = rng.poisson(4.0 * (1 - satisfaction) ** 2 * (0.5 + engagement))
    bills = rng.poisson(12 * days / 365) + 1
    on_time = np.clip(0.5 + 0.3 * means + 0.3 * commitment + rng.normal(0, 0.1, count), 0, 1)
    overdue = np.round(bills * (1 - on_time))
    response = np.clip(0.6 * engagement + 0.4 * satisfaction + rng.normal(0, 0.1, count), 0, 1)
    purchases = rng.poisson(8.0 * means * engagement + 0.2)
    amount = purchases * rng.lognormal(4.0 + 1.5 * means, 0.5)
    shares = rng.poisson(3.0 * satisfaction * engagement)

    features = np.column_stack(
        [
            np.log1p(events),
            days,
            events / np.maximum(days / 7.0, 1.0),
            channels,
            entropy,
            valence,
            streak,
            complaints,
            on_time,
            overdue,
            response,
            purchases,
            np.log1p(amount),
            shares,
        ]
    ).astype(np.float32)
    assert features.shape[1] == len(FEATURES)
    for column in ("emotion_average", "on_time_ratio", "campaign_response"):
        missing = rng.random(count) < 0.2
        features[missing, FEATURES.index(column)] = np.nan

    value = _sigmoid(4.0 * means * (0.4 + engagement) + 0.15 * purchases - 2.2)
    loyalty = _sigmoid(3.0 * commitment + 1.5 * satisfaction + days / 365 - 2.6)
    churn = _sigmoid(
        2.5 * (1 - satisfaction)
        + 0.35 * complaints
        + 0.1 * overdue
        - 2.0 * commitment
        - 1.2 * engagement
    )
    targets = np.column_stack([value, loyalty, churn]).astype(np.float32)
    return features, targets
