from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from processors.preferences import decay_weight, time_of_day

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("utc_hour", "bucket"),
    [
        (22, "morning"),
        (2, "morning"),
        (3, "noon"),
        (5, "noon"),
        (6, "afternoon"),
        (10, "evening"),
        (14, "evening"),
        (15, "night"),
        (21, "night"),
    ],
)
def test_time_of_day_uses_the_configured_zone(utc_hour: int, bucket: str) -> None:
    moment = datetime(2026, 11, 1, utc_hour, 30, tzinfo=ZoneInfo("UTC"))
    assert time_of_day(moment, SHANGHAI) == bucket


def test_later_events_weigh_more_and_half_life_halves() -> None:
    day = 86_400_000
    t = 1_800_000_000_000
    assert decay_weight(t + 30 * day, 30.0) == pytest.approx(2 * decay_weight(t, 30.0))


def test_weights_stay_finite_far_in_the_future_and_past() -> None:
    assert decay_weight(10**15, 1.0) < float("inf")
    assert decay_weight(-(10**15), 1.0) >= 0.0
