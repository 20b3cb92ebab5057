"""Per-customer indicators (seed 002 "个人指标"): activity, credit, campaigns, influence.

All from stored state, never the wall clock, so replays agree:

- ``activity`` — recency-weighted events as of the customer's last event:
  Σ 2^((tᵢ − last_seen) / half-life) over customer-initiated events; 1 event just now = 1,
  an event one half-life before the last = 0.5.
- ``credit`` — bills paid on time / (paid + overdue); None before the first bill.
- ``campaign_participation`` — campaigns joined / (joined + ignored); None before any.
- ``influence`` — 1 − exp(−(shares + shared groups + friend relations) / 10), in 0…1.
- ``wealth`` — None for now: it needs amounts relative to the whole population, i.e.
  population quantiles kept incrementally, which are not built yet.
"""

from __future__ import annotations

import math
from typing import Any

from processors.preferences import DECAY_EPOCH_MS

_DAY_MS = 86_400_000


def _ratio(good: float, bad: float) -> float | None:
    return round(good / (good + bad), 4) if good + bad else None


def indicators(sections: dict[str, dict[str, str]], half_life_days: float) -> dict[str, Any]:
    """``profile.indicators`` from stored sections (``sections_of``)."""
    counts, weights, registers = sections["c"], sections["d"], sections["r"]
    last_seen = sections["m"].get("last_seen")
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
        "wealth": None,
        "campaign_participation": _ratio(
            float(counts.get("act:campaign_joined", 0)),
            float(counts.get("act:campaign_ignored", 0)),
        ),
        "influence": round(1.0 - math.exp(-reach / 10.0), 4),
    }
