"""Accounts (seed 002 "用电户" and docs/design.md "People and accounts").

An account (``account_no``: an electricity account, a contract, a subscription) is an
entity of its own that several people can share, each with a role on it. Events that
carry only an account number apply to the account — its stats, behaviour trail, credit
from bills and wealth from spend — and every person linked to it sees the account in
their profile (``accounts``); a person's indicators and scores count the accounts they
hold (:func:`holding`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processors.layout import ACCOUNT_ENTITY, Sections


@dataclass(frozen=True, slots=True)
class AccountState:
    """An account as the store gives it: its profile hash (with the layout's prefixes)
    and its people (customer id → their role register ``order TAB role``, '' without a
    role; empty when not asked for)."""

    fields: dict[str, str]
    people: dict[str, str]
    notify: tuple[str, ...] = ()
    """Employees connected to any of its people (when the people were asked for)."""


def account_entity(account_no: str) -> str:
    """The entity id an account's key family is hash-tagged with."""
    return ACCOUNT_ENTITY + account_no


def role_name(register: str) -> str | None:
    """The role in a role register (``order TAB role``), or None."""
    return register.split("\t", 1)[1] if "\t" in register else None


def people_document(people: Mapping[str, str]) -> list[dict[str, Any]]:
    """``account.people``: each person with their role, by customer id."""
    return [{"customer_id": person, "role": role_name(people[person])} for person in sorted(people)]


# What a person's indicators and features read that an account also has: counts of
# actions (bills, purchases, shares …), spend, and the decayed activity per channel.
_HELD_COUNTS = "act:"
_HELD_WEIGHTS = "ch:"


def holding(person: Sections, accounts: Mapping[str, Sections]) -> Sections:
    """A person's sections with the accounts they hold added in: action counts, spend
    and channel activity summed, the latest ``last_seen``. The person's own ``stats``
    keep their own events (an account's events are the account's)."""
    if not accounts:
        return person
    out = person.copy()
    counts, weights, sums, meta = out.counts, out.weights, out.sums, out.meta
    for account in accounts.values():
        for name, value in account.counts.items():
            if name.startswith(_HELD_COUNTS):
                counts[name] = str(int(counts.get(name, 0)) + int(value))
        for name, value in account.weights.items():
            if name.startswith(_HELD_WEIGHTS):
                weights[name] = repr(float(weights.get(name, 0.0)) + float(value))
        if "amount" in account.sums:
            sums["amount"] = repr(float(sums.get("amount", 0.0)) + float(account.sums["amount"]))
        seen = account.meta.get("last_seen")
        if seen and int(seen) > int(meta.get("last_seen", 0)):
            meta["last_seen"] = seen
    return out


def behaviour(counts: Mapping[str, str]) -> dict[str, int]:
    """The account's behaviour trail as counts per action (bills, business handled …)."""
    return {
        name[len(_HELD_COUNTS) :]: int(value)
        for name, value in sorted(counts.items())
        if name.startswith(_HELD_COUNTS)
    }
