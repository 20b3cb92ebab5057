"""Real-time agent assist (seed 003): call phases and the advice for a customer turn.

Owns the decision DESIGN.md "Agent prompt" describes, as pure functions: the phase of a
call from a segment's ``offset_ms`` (``opening`` [0, 30 s), ``discovery`` [30 s, 120 s),
``proposal`` [120 s, 300 s), ``closing`` from 300 s; boundaries configurable), and the
advice from the customer's emotion and the phase × product statistics:

- positive → ``recommend_product``: the product with the highest smoothed success rate
  (accepted + 1) / (offers + 2) for that phase, among products with at least
  ``min_offers`` offers and a rate of at least ``min_rate``, skipping products the
  customer holds or declined; if none qualifies, ``introduce_or_answer``;
- neutral → ``introduce_or_answer``; negative → ``soothe_and_close``.

The statistics are kept by the state script from ``feedback.recorded`` events (offers and
acceptances per phase and product, counted once per event id); ``portrait products``
prints them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PHASES = ("opening", "discovery", "proposal", "closing")
STATS_FIELD_SEPARATOR = "\t"


@dataclass(frozen=True, slots=True)
class AssistSettings:
    """Phase boundaries (ms from the call's start) and the product-choice thresholds."""

    boundaries_ms: tuple[int, int, int] = (30_000, 120_000, 300_000)
    min_offers: int = 3
    min_rate: float = 0.3


@dataclass(frozen=True, slots=True)
class ProductStats:
    """Offers and acceptances of one product in one phase."""

    offers: int = 0
    accepted: int = 0

    @property
    def rate(self) -> float:
        """Smoothed success rate (accepted + 1) / (offers + 2)."""
        return (self.accepted + 1) / (self.offers + 2)


@dataclass(frozen=True, slots=True)
class Advice:
    """What to prompt: the kind, the product for a recommendation, and why."""

    kind: str
    phase: str
    product: str | None = None
    reasons: list[str] = field(default_factory=list)


def phase_for_offset(offset_ms: int, settings: AssistSettings = AssistSettings()) -> str:
    """The call phase a segment ``offset_ms`` after the call's start belongs to."""
    for phase, boundary in zip(PHASES, settings.boundaries_ms, strict=False):
        if offset_ms < boundary:
            return phase
    return PHASES[-1]


def stats_field(kind: str, phase: str, product: str) -> str:
    """Name of one counter in the statistics hash (``offers`` or ``accepted``)."""
    return STATS_FIELD_SEPARATOR.join((kind, phase, product))


def feedback_counts(phase: str | None, product: str | None, outcome: str | None) -> dict[str, int]:
    """Counter increments for one feedback: an offer, and an acceptance if accepted."""
    if not phase or not product or outcome not in ("accepted", "declined"):
        return {}
    counts = {stats_field("offers", phase, product): 1}
    if outcome == "accepted":
        counts[stats_field("accepted", phase, product)] = 1
    return counts


def parse_stats(raw: Mapping[str, str]) -> dict[str, dict[str, ProductStats]]:
    """phase → product → stats, from the statistics hash."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for name, value in raw.items():
        parts = name.split(STATS_FIELD_SEPARATOR)
        if len(parts) != 3:
            continue
        kind, phase, product = parts
        counts.setdefault((phase, product), {})[kind] = int(value)
    out: dict[str, dict[str, ProductStats]] = {}
    for (phase, product), c in counts.items():
        out.setdefault(phase, {})[product] = ProductStats(c.get("offers", 0), c.get("accepted", 0))
    return out


def choose_advice(
    emotion: str,
    phase: str,
    stats: Mapping[str, Mapping[str, ProductStats]],
    skip: Iterable[str] = (),
    settings: AssistSettings = AssistSettings(),
) -> Advice:
    """The advice for a customer turn (module docstring)."""
    if emotion == "negative":
        return Advice("soothe_and_close", phase, None, ["customer is upset"])
    if emotion != "positive":
        return Advice("introduce_or_answer", phase, None, ["customer is neutral"])
    skipped = set(skip)
    candidates = [
        (s.rate, product)
        for product, s in stats.get(phase, {}).items()
        if product not in skipped
        and s.offers >= settings.min_offers
        and s.rate >= settings.min_rate
    ]
    if not candidates:
        reasons = ["customer is positive", f"no product proven in the {phase} phase"]
        return Advice("introduce_or_answer", phase, None, reasons)
    rate, product = min(candidates, key=lambda item: (-item[0], item[1]))  # ties: by name
    return Advice(
        "recommend_product",
        phase,
        product,
        ["customer is positive", f"{product} succeeds {rate:.0%} of the time in the {phase} phase"],
    )
