"""Channel and time-of-day preference from decayed event weights.

Each counted event adds ``2 ** ((t - EPOCH) / half_life)`` to its channel and its
time-of-day bucket. All weights decay at the same rate, so the ranking is the same at
any read time and the sums simply add: order-independent, and a merge adds them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

DECAY_EPOCH_MS = int(datetime(2020, 1, 1, tzinfo=UTC).timestamp() * 1000)
_DAY_MS = 86_400_000

TIME_OF_DAY_BUCKETS: tuple[tuple[int, int, str], ...] = (
    (6, 11, "morning"),
    (11, 14, "noon"),
    (14, 18, "afternoon"),
    (18, 23, "evening"),
)


def time_of_day(occurred: datetime, zone: ZoneInfo) -> str:
    """``morning`` 06–11, ``noon`` 11–14, ``afternoon`` 14–18, ``evening`` 18–23, else ``night``."""
    hour = occurred.astimezone(zone).hour
    for start, end, name in TIME_OF_DAY_BUCKETS:
        if start <= hour < end:
            return name
    return "night"


def decay_weight(occurred_ms: int, half_life_days: float) -> float:
    """Weight of one event at ``occurred_ms``; later events weigh more, doubling per half-life."""
    exponent = (occurred_ms - DECAY_EPOCH_MS) / (half_life_days * _DAY_MS)
    return float(2.0 ** min(max(exponent, -1000.0), 1000.0))
