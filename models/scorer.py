"""``profile.scores``: the customer-feature model's scores and the service priority tier.

Scores are derived from stored state on every change, never stored: the same state and
model version always give the same scores, and a new model version rescores customers
as they change. The pipeline scores all customers of a chunk in one model call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from models.customer_model import CustomerModel, priority_tier
from processors.document import EMPTY_SCORES, Sections
from processors.emotion import emotion_document
from processors.features import feature_vector


def score_sections(model: CustomerModel | None, states: Sequence[Sections]) -> list[dict[str, Any]]:
    """``profile.scores`` for each customer state, in one model call."""
    if model is None or not states:
        return [dict(EMPTY_SCORES) for _ in states]
    vectors = np.stack([feature_vector(sections) for sections in states])
    documents = []
    for sections, scores in zip(states, model.score(vectors), strict=True):
        emotion = emotion_document(sections["r"], sections["e"], sections["n"])
        documents.append(
            {
                "value": scores.value,
                "loyalty": scores.loyalty,
                "churn_risk": scores.churn_risk,
                "priority": priority_tier(scores, emotion["last"], emotion["negative_streak"]),
                "model_version": model.version,
            }
        )
    return documents
