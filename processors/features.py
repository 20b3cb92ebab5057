"""The customer feature vector (seed 001 "关键特征"): rule-based key features from state.

Interaction, emotion and behaviour-type features, computed only from stored profile state
(never from the wall clock), so a replay gives the same vector. Missing values stay NaN
here; the customer-feature model's saved transforms fill, standardise and normalise them
(``models/customer_model.py``).
"""

from __future__ import annotations

import math

import numpy as np

from processors.emotion import negative_streak
from processors.layout import Sections

FEATURES: tuple[str, ...] = (
    "log_events",  # interaction volume
    "active_days",  # first_seen → last_seen
    "events_per_week",
    "channels_used",
    "channel_entropy",  # spread across channels, bits
    "emotion_average",  # valence −1…1
    "negative_streak",
    "complaints",
    "on_time_ratio",  # bills paid / (paid + overdue)
    "overdue_bills",
    "campaign_response",  # joined / (joined + ignored)
    "purchases",
    "log_amount",  # log1p of the summed amounts
    "shares",
)
"""Names of the vector's columns, in order; the model card records the same list."""

_DAY_MS = 86_400_000


def _count(counts: dict[str, str], name: str) -> float:
    return float(counts.get(name, 0))


def feature_vector(sections: Sections) -> np.ndarray:
    """The features of one customer from its stored sections (``sections_of``)."""
    meta, counts, sums = sections.meta, sections.counts, sections.sums
    events = _count(counts, "events_total")
    first, last = meta.get("first_seen"), meta.get("last_seen")
    days = (int(last) - int(first)) / _DAY_MS if first and last else 0.0
    channels = [float(v) for k, v in counts.items() if k.startswith("ch:")]
    total = sum(channels)
    entropy = -sum(c / total * math.log2(c / total) for c in channels if c) if total else 0.0
    weight = float(sums.get("w", 0.0))
    paid, overdue = _count(counts, "act:bill_paid"), _count(counts, "act:bill_overdue")
    joined, ignored = _count(counts, "act:campaign_joined"), _count(counts, "act:campaign_ignored")
    values = [
        math.log1p(events),
        days,
        events / max(days / 7.0, 1.0),
        float(len(channels)),
        entropy,
        float(sums.get("wv", 0.0)) / weight if weight > 0 else math.nan,
        float(negative_streak(sections.negatives)),
        _count(counts, "act:complaint"),
        paid / (paid + overdue) if paid + overdue else math.nan,
        overdue,
        joined / (joined + ignored) if joined + ignored else math.nan,
        _count(counts, "act:purchase"),
        math.log1p(max(float(sums.get("amount", 0.0)), 0.0)),
        _count(counts, "act:share"),
    ]
    return np.asarray(values, dtype=np.float32)
