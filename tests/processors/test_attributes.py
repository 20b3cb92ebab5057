import pytest

from processors.attributes import (
    decode_register,
    encode_register,
    normalise_attribute_name,
    normalise_attribute_value,
    order_key,
)


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("birthday", "1985/3/7", "1985-03-07"),
        ("birthday", "1985年3月7日", "1985-03-07"),
        ("birth_date", "19850307", "1985-03-07"),
        ("birthday", "2026-11-01T10:00:00+08:00", "2026-11-01"),
        ("birthday", "not a date", "not a date"),
        ("phone", "+86 (138) 0013-8000", "8613800138000"),
        ("city", "  上海 ", "上海"),
        ("age", 41, 41),
    ],
)
def test_values_are_normalised(name: str, raw: object, expected: object) -> None:
    assert normalise_attribute_value(name, raw) == expected


def test_names_are_normalised() -> None:
    assert normalise_attribute_name(" Company Name ") == "company_name"


def test_manual_beats_any_inferred_value_even_a_newer_one() -> None:
    manual_old = order_key(True, 1_000, "e1")
    inferred_new = order_key(False, 9_000_000, "e2")
    assert manual_old > inferred_new


def test_newer_beats_older_within_a_kind_and_event_id_breaks_ties() -> None:
    assert order_key(False, 2_000, "a") > order_key(False, 1_999, "z")
    assert order_key(True, 2_000, "b") > order_key(True, 2_000, "a")


def test_timestamps_compare_numerically_across_digit_counts() -> None:
    assert order_key(False, 10_000_000_000_000, "a") > order_key(False, 9_999_999_999_999, "a")


def test_register_round_trip() -> None:
    stored = encode_register(order_key(False, 5, "e"), {"value": "上海", "source": "app"})
    assert decode_register(stored) == {"value": "上海", "source": "app"}
