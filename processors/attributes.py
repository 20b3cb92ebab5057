"""Attribute values: normalisation and the order that decides which value wins.

An attribute is a last-writer-wins register. The order key is
``(manual, occurred_at, event_id)``: a manual edit beats every inferred value until a
later manual edit, and among values of the same kind the newest wins. Because the order
is total, applying the same values in any order (or merging two customers) gives the
same winner, which is what makes replays order-independent.
"""

from __future__ import annotations

import re
import time
from datetime import date, datetime
from functools import lru_cache
from typing import Any

import orjson

_NON_DIGITS = re.compile(r"\D+")
_DATE_PATTERNS = (
    re.compile(r"^(\d{4})[-/.年](\d{1,2})[-/.月](\d{1,2})日?$"),
    re.compile(r"^(\d{4})(\d{2})(\d{2})$"),
)
_PHONE_KEYS = {"phone", "mobile", "tel", "telephone", "phone_number", "手机", "电话"}
_DATE_KEY_HINTS = ("date", "birthday", "birth", "生日", "日期")


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@lru_cache(maxsize=4096)
def normalise_attribute_name(name: str) -> str:
    """Attribute names are trimmed, lower-case, spaces as underscores, no control characters."""
    return "_".join(_CONTROL.sub(" ", name).strip().lower().split())[:64]


def _as_iso_date(text: str) -> str | None:
    for pattern in _DATE_PATTERNS:
        match = pattern.match(text.strip())
        if match:
            year, month, day = (int(g) for g in match.groups())
            try:
                return date(year, month, day).isoformat()
            except ValueError:
                return None
    try:
        return datetime.fromisoformat(text.strip()).date().isoformat()
    except ValueError:
        return None


def normalise_attribute_value(name: str, value: Any) -> Any:
    """Canonical value: strings trimmed, dates ``YYYY-MM-DD``, phone numbers digits only."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if name in _PHONE_KEYS:
        return _NON_DIGITS.sub("", text)
    if _is_date_name(name):
        return _as_iso_date(text) or text
    return text


@lru_cache(maxsize=4096)
def _is_date_name(name: str) -> bool:
    return any(hint in name for hint in _DATE_KEY_HINTS)


@lru_cache(maxsize=65_536)
def iso_from_ms(ms: int) -> str:
    """RFC 3339 UTC timestamp with milliseconds."""
    whole, frac = divmod(int(ms), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{frac:03d}Z"


def event_order(occurred_ms: int, event_id: str) -> str:
    """Sortable string: compares as ``(occurred_at, event_id)``."""
    return f"{max(occurred_ms, 0):015d}|{event_id}"


def order_time(order: str) -> str:
    """The RFC 3339 time of an :func:`event_order` key."""
    return iso_from_ms(int(order.split("|", 1)[0]))


def order_key(manual: bool, occurred_ms: int, event_id: str) -> str:
    """Sortable string: compares as ``(manual, occurred_at, event_id)``."""
    return f"{1 if manual else 0}|{event_order(occurred_ms, event_id)}"


def encode_register(order: str, payload: Any) -> str:
    """A register as stored in Redis: the order key, a tab, the JSON payload."""
    return order + "\t" + orjson.dumps(payload).decode("utf-8")


@lru_cache(maxsize=65_536)
def decode_register(stored: str) -> Any:
    """The JSON payload of a stored register (shared between callers: do not mutate)."""
    return orjson.loads(stored.split("\t", 1)[1])
