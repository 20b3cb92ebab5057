"""Customer identifiers: normalisation, and the deterministic id of a new customer.

Resolution against the identity index and the merge of two customers happen inside the
state script (``portrait/state/apply_event.lua``) so that they are atomic with the update;
this module decides what the identifiers *are* before they get there.
"""

from __future__ import annotations

import hashlib
import re

from portrait.events import IDENTIFIER_TYPES, CustomerRef

_NON_DIGITS = re.compile(r"\D+")


def normalise_identifier(kind: str, value: str) -> str:
    """Canonical form of one identifier: phones digits only, emails lower-case, all trimmed."""
    value = value.strip()
    if kind == "phone":
        return _NON_DIGITS.sub("", value)
    if kind == "email":
        return value.lower()
    return value


def identifier_keys(customer: CustomerRef) -> list[str]:
    """Normalised ``kind:value`` strings, deduplicated, in creator-priority order.

    The first entry is the identifier a new customer's id is derived from: the highest
    priority kind in :data:`IDENTIFIER_TYPES`, then the smallest value, so that the same
    event always creates the same customer.
    """
    seen: set[str] = set()
    ranked: list[tuple[int, str, str]] = []
    for kind, raw in customer.pairs():
        value = normalise_identifier(kind, raw)
        key = f"{kind}:{value}"
        if value and key not in seen:
            seen.add(key)
            ranked.append((IDENTIFIER_TYPES.index(kind), value, key))
    ranked.sort()
    return [key for _, _, key in ranked]


def customer_id_for(identifier_key: str) -> str:
    """The customer id derived from the identifier that created the customer."""
    return "c-" + hashlib.sha256(identifier_key.encode("utf-8")).hexdigest()[:20]


def split_identifier_key(key: str) -> tuple[str, str]:
    """``"phone:138…"`` → ``("phone", "138…")``."""
    kind, _, value = key.partition(":")
    return kind, value
