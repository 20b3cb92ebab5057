"""The settings that shape how stored state reads as a profile document."""

from __future__ import annotations

from dataclasses import dataclass, field

from processors.relationships import ClosenessWeights


@dataclass(frozen=True, slots=True)
class DocumentSettings:
    """Closeness weights and the recency half-life (as the deltas use it)."""

    closeness: ClosenessWeights = field(default_factory=ClosenessWeights)
    half_life_days: float = 30.0
