"""The settings that shape how stored state reads as a profile document."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from processors.relationships import ClosenessWeights


@dataclass(frozen=True, slots=True)
class DocumentSettings:
    """Closeness weights, the recency half-life (as the deltas use it), the role →
    permission table, and a snapshot of the spend population."""

    closeness: ClosenessWeights = field(default_factory=ClosenessWeights)
    half_life_days: float = 30.0
    permissions: Mapping[str, list[str]] = field(default_factory=dict)
    population: Mapping[str, int] = field(default_factory=dict)
    """Customers per spend bucket (the store's ``pop:spend``), for ``indicators.wealth``."""
    keywords_top_k: int = 10
    needs_rules: Sequence[Mapping[str, Any]] = ()
    """The latent-needs rule table (``processors.needs``)."""
