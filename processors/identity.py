"""Customer identifiers: normalisation, the identity rules, and the deterministic id of a
new customer.

People and accounts are different things (docs/design.md "People and accounts"):
``customer_id``, ``phone``, ``im_id`` and ``email`` identify a *person*; ``account_no``
identifies an *account* several people can share, so it never resolves or merges people.

The identity rules (docs/design.md "Identity rules", ``PORTRAIT_IDENTITY_FILE``): phones in
E.164 (``PORTRAIT_DEFAULT_REGION`` for numbers without a country code), e-mails
lower-cased, values that never identify anyone (blocked patterns) rejected here, and the
most values of a kind one person may hold. Limits and the "would merge two people who
hold different values of a kind limited to one" rule need the stored identities, so the
state script (``state/apply_event.lua``) applies them, atomically with the
update; this module decides what the identifiers *are* before they get there.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import orjson
import phonenumbers

from portrait.config import LOCAL_CUSTOMER_ID_KEY
from portrait.events import ACCOUNT_KIND, PERSON_KINDS, CustomerRef

_NON_DIGITS = re.compile(r"\D+")

DEFAULT_LIMITS: dict[str, int] = {"customer_id": 1, "phone": 5, "email": 5, "im_id": 10}


@dataclass(frozen=True, slots=True)
class IdentityRules:
    """Per-kind limits and blocked patterns (full match on the normalised value; for
    phones, the digits of the E.164 form and of the value as written)."""

    region: str = "CN"
    limits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    blocked: Mapping[str, Sequence[re.Pattern[str]]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, region: str = "CN") -> IdentityRules:
        """The rules of a rules file (see ``portrait/settings/identity.json``)."""
        table = orjson.loads(path.read_bytes())
        limits = dict(DEFAULT_LIMITS)
        limits.update({kind: int(n) for kind, n in table.get("limits", {}).items()})
        blocked = {
            kind: tuple(re.compile(pattern, re.IGNORECASE) for pattern in patterns)
            for kind, patterns in table.get("blocked", {}).items()
        }
        return cls(region.upper(), limits, blocked)

    def is_blocked(self, kind: str, *forms: str) -> bool:
        """True when any form of the value fully matches a blocked pattern of its kind."""
        return any(p.fullmatch(form) for p in self.blocked.get(kind, ()) for form in forms)


PLAIN_RULES = IdentityRules()
"""No blocked values, the default limits, region CN."""


@lru_cache(maxsize=65_536)
def normalise_phone(value: str, region: str = "CN") -> str:
    """E.164 (``+8613912345678``) when the number parses as a possible number in
    ``region`` (``+86 139 1234 5678``, ``0086 13912345678`` and ``13912345678`` are the
    same number); otherwise its digits, as written."""
    digits = _NON_DIGITS.sub("", value)
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return digits
    if not phonenumbers.is_possible_number(number):
        return digits
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_identifier(kind: str, value: str, region: str = "CN") -> str:
    """Canonical form of one identifier: phones E.164, e-mails lower-case, all trimmed."""
    value = value.strip()
    if kind == "phone":
        return normalise_phone(value, region)
    if kind == "email":
        return value.lower()
    return value


@dataclass(slots=True)
class Identified:
    """An event's identifiers after the rules: the person identifier keys (``kind:value``,
    in creator-priority order), the account numbers, and what was rejected (kind, reason)."""

    people: list[str] = field(default_factory=list)
    accounts: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


def identify(customer: CustomerRef, rules: IdentityRules = PLAIN_RULES) -> Identified:
    """Normalise, deduplicate and screen an event's identifiers.

    Person identifiers come out deduplicated in creator-priority order: the first is the
    one a new person's id derives from (the highest-priority kind in
    :data:`~portrait.events.PERSON_KINDS`, then the smallest value), so the same event
    always creates the same person. A blocked value is left out and reported.
    """
    out = Identified()
    seen: set[str] = set()
    ranked: list[tuple[int, str, str]] = []
    for kind, raw in customer.pairs():
        value = normalise_identifier(kind, raw, rules.region)
        if not value:
            continue
        if kind == ACCOUNT_KIND:
            if value not in out.accounts:
                out.accounts.append(value)
            continue
        key = f"{kind}:{value}"
        if key in seen:
            continue
        seen.add(key)
        written = _NON_DIGITS.sub("", raw) if kind == "phone" else value
        if rules.is_blocked(kind, value.lstrip("+"), written):
            out.rejected.append((kind, "blocked"))
            continue
        ranked.append((PERSON_KINDS.index(kind), value, key))
    ranked.sort()
    out.people = [key for _, _, key in ranked]
    out.accounts.sort()
    return out


CUSTOMER_ID = re.compile(r"c-[0-9a-f]{20}")
"""What every customer id looks like (``customer_id_for``)."""


def customer_id_for(identifier_key: str, key: bytes = LOCAL_CUSTOMER_ID_KEY) -> str:
    """The customer id derived from the identifier that created the customer: keyed
    (HMAC-SHA-256 with ``PORTRAIT_CUSTOMER_ID_KEY``), so that without the key no one can
    tell which identifier an id belongs to by trying every phone number; deterministic, so
    a replay with the same key gives the same ids."""
    digest = hmac.new(key, identifier_key.encode("utf-8"), hashlib.sha256)
    return "c-" + digest.hexdigest()[:20]


def is_customer_id(value: str) -> bool:
    """True for a string shaped like a customer id (the API refuses other spellings)."""
    return CUSTOMER_ID.fullmatch(value) is not None


def split_identifier_key(key: str) -> tuple[str, str]:
    """``"phone:+86138…"`` → ``("phone", "+86138…")``."""
    kind, _, value = key.partition(":")
    return kind, value
