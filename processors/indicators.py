"""Per-customer indicators (seed 002 "个人指标"): activity, credit, campaigns, influence.

All from stored state, never the wall clock, so replays agree:

- ``activity`` — recency-weighted events as of the customer's last event:
  Σ 2^((tᵢ − last_seen) / half-life) over customer-initiated events; 1 event just now = 1,
  an event one half-life before the last = 0.5.
- ``credit`` — bills paid on time / (paid + overdue); None before the first bill.
- ``campaign_participation`` — campaigns joined / (joined + ignored); None before any.
- ``influence`` — 1 − exp(−(shares + shared groups + friend relations) / 10), in 0…1.
- ``wealth`` — the spend percentile in the population: spenders are counted per spend
  bucket ⌊4·log2(1 + total amount)⌋ (kept incrementally by the state script, also
  through merges and erasures; people by their own spend, accounts by theirs); wealth =
  (spenders in lower buckets + half of the own bucket) / spenders. An account ranks
  among accounts with spend; a person, whose spend counts the accounts they hold (bills
  paid and business handled on them), among people and accounts with spend. None without
  spend.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from processors.layout import ACCOUNT_SPEND, Sections
from processors.preferences import DECAY_EPOCH_MS

_DAY_MS = 86_400_000


def _ratio(good: float, bad: float) -> float | None:
    return round(good / (good + bad), 4) if good + bad else None


def spend_bucket(amount: float) -> int:
    """The population bucket of a total amount (the same formula as ``apply_event.lua``)."""
    return math.floor(math.log(1 + amount) / math.log(2) * 4)


@dataclass(frozen=True, slots=True)
class Population:
    """Spenders per spend bucket (the store's ``pop:spend``), read once per batch and
    asked for many percentiles: people and accounts together (what a person, whose spend
    includes the accounts they hold, ranks among), and the accounts alone (``accounts``,
    what an account ranks among)."""

    counts: Mapping[int, int] = field(default_factory=dict)
    total: int = 0
    account_counts: Mapping[int, int] = field(default_factory=dict)
    _edges: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _below: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # the buckets in order and the customers below each: a percentile is one bisect
        edges = tuple(sorted(self.counts))
        below = [0]
        for bucket in edges:
            below.append(below[-1] + self.counts[bucket])
        object.__setattr__(self, "_edges", edges)
        object.__setattr__(self, "_below", tuple(below))

    @classmethod
    def of(cls, stored: Mapping[str, int]) -> Population:
        """The population from the stored histogram (bucket → spenders; an account's
        bucket carries :data:`~processors.layout.ACCOUNT_SPEND` in front)."""
        counts: dict[int, int] = {}
        accounts: dict[int, int] = {}
        for name, count in stored.items():
            if int(count) <= 0:
                continue
            if name.startswith(ACCOUNT_SPEND):
                bucket = int(name[len(ACCOUNT_SPEND) :])
                accounts[bucket] = accounts.get(bucket, 0) + int(count)
            else:
                bucket = int(name)
            counts[bucket] = counts.get(bucket, 0) + int(count)
        return cls(counts, sum(counts.values()), accounts)

    @property
    def accounts(self) -> Population:
        """The accounts with spend alone."""
        return Population(self.account_counts, sum(self.account_counts.values()))

    def below(self, bucket: int) -> int:
        """Customers in buckets lower than ``bucket``."""
        return self._below[bisect_left(self._edges, bucket)]


def wealth(amount: float | None, population: Population) -> float | None:
    """Spend percentile among customers with spend (module docstring), or None."""
    if amount is None or population.total == 0:
        return None
    own = spend_bucket(amount)
    share = population.below(own) + 0.5 * population.counts.get(own, 0)
    return round(share / population.total, 4)


def indicators(
    sections: Sections,
    half_life_days: float,
    population: Population | None = None,
) -> dict[str, Any]:
    """``profile.indicators`` from stored sections (``sections_of``)."""
    counts, weights, registers = sections.counts, sections.weights, sections.registers
    last_seen = sections.meta.get("last_seen")
    decayed = sum(float(v) for k, v in weights.items() if k.startswith("ch:"))
    activity = None
    if last_seen and decayed:
        exponent = (int(last_seen) - DECAY_EPOCH_MS) / (half_life_days * _DAY_MS)
        activity = round(decayed / 2.0 ** min(max(exponent, -1000.0), 1000.0), 4)
    relations = sum(1 for register in registers.values() if register.endswith("\tadded"))
    reach = float(counts.get("act:share", 0)) + relations
    return {
        "activity": activity,
        "credit": _ratio(
            float(counts.get("act:bill_paid", 0)), float(counts.get("act:bill_overdue", 0))
        ),
        "wealth": wealth(
            float(sections.sums["amount"]) if "amount" in sections.sums else None,
            population or Population(),
        ),
        "campaign_participation": _ratio(
            float(counts.get("act:campaign_joined", 0)),
            float(counts.get("act:campaign_ignored", 0)),
        ),
        "influence": round(1.0 - math.exp(-reach / 10.0), 4),
    }
