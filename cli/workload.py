"""The fault suite's workload (``cli/chaos.py``): seeded people with several identifier
forms, their events and erasures, poison records, and what the profiles must end as."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

START = datetime(2026, 11, 1, tzinfo=UTC)
DAY = timedelta(days=1)


@dataclass
class Person:
    index: int
    ids: dict[str, str]  # kind → value as the person's events write it (phones vary)
    phone_digits: str
    account: str | None = None
    events: set[str] = field(default_factory=set)
    erased: bool = False


@dataclass
class Workload:
    """The records to produce, in order, and what must come out of them."""

    lines: list[bytes] = field(default_factory=list)
    people: list[Person] = field(default_factory=list)
    account_events: Counter[str] = field(default_factory=Counter)
    bad: int = 0
    applied: set[str] = field(default_factory=set)
    """Event ids whose outputs must appear (events of people who are not erased)."""


def _moment(rng: random.Random, days: float = 28.0) -> str:
    return (START + timedelta(seconds=rng.uniform(0, days * 86_400))).isoformat()


def _phone_forms(digits: str) -> list[str]:
    return [digits, f"+86 {digits[:3]} {digits[3:7]} {digits[7:]}", f"0086 {digits}"]


class _Envelopes(list[dict[str, Any]]):
    """The workload's events as they are generated, each with a fresh id."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng

    def add(self, person: Person | None, customer: dict[str, Any], kind: str, payload: Any) -> None:
        eid = f"ev-{len(self):06d}"
        self.append(
            {
                "event_id": eid,
                "type": kind,
                "occurred_at": _moment(self.rng),
                "source": self.rng.choice(["app", "web", "wecom", "hotline"]),
                "customer": customer,
                "payload": payload,
            }
        )
        if person is not None:
            person.events.add(eid)


def _people(rng: random.Random, seed: int, count: int) -> list[Person]:
    out = []
    for i in range(count):
        digits = f"139{rng.randrange(10**8):08d}"
        person = Person(i, {"im_id": f"wx-{seed}-{i}-x", "phone": digits}, digits)
        if rng.random() < 0.5:
            person.ids["email"] = f"p{i}.s{seed}@corp{i % 7}.cn"
        if i % 10 < 4:  # households: two people share an account
            person.account = f"H-{seed}-{i // 2}"
        out.append(person)
    return out


def _person_events(envelopes: _Envelopes, person: Person, count: int) -> None:
    """One event carries every identifier (the merge); the others one or two of them,
    the phone written one of three ways; the second names the household's account."""
    rng, kinds = envelopes.rng, list(person.ids)
    for n in range(count):
        chosen = kinds if n == 0 else rng.sample(kinds, rng.choice([1, 1, 2]))
        customer: dict[str, Any] = {}
        for kind in chosen:
            value = person.ids[kind]
            customer[kind] = rng.choice(_phone_forms(value)) if kind == "phone" else value
        attrs: dict[str, Any] = {"seq": n}
        if person.account and n == 1:
            customer["account_no"] = person.account
            attrs["role"] = "account_holder" if person.index % 2 == 0 else "family_member"
        if rng.random() < 0.3:
            text = rng.choice(["账单怎么查", "Is my bill ready?", "停电了吗", "thanks a lot"])
            payload = {
                "conversation_id": f"conv-{person.index}",
                "direction": "inbound",
                "employee_id": f"emp-{person.index % 5}",
                "text": text,
            }
            envelopes.add(person, customer, "chat.message", payload)
        else:
            action = rng.choice(["login", "page_view", "purchase", "share"])
            envelopes.add(
                person, customer, "channel.event", {"action": action, "attributes": attrs}
            )


def _erasure(person: Person) -> dict[str, Any]:
    """An erasure after every event of the person's (it may still arrive first)."""
    person.erased = True
    return {
        "event_id": f"erase-{person.index}",
        "type": "customer.erasure",
        "occurred_at": (START + 40 * DAY).isoformat(),
        "source": "crm",
        "customer": {"phone": person.phone_digits},
        "payload": {},
    }


def build_workload(seed: int, people: int, events_per_person: int) -> Workload:
    """A seeded workload (module docstring) and its expectation."""
    rng = random.Random(seed)
    work = Workload(people=_people(rng, seed, people))
    envelopes = _Envelopes(rng)
    for person in work.people:
        _person_events(envelopes, person, events_per_person)
    for person in work.people:  # account-only bills
        if person.account and person.index % 2 == 0:
            for _ in range(rng.randrange(1, 4)):
                bill = {"action": "bill_paid"}
                envelopes.add(None, {"account_no": person.account}, "channel.event", bill)
                work.account_events[person.account] += 1
    envelopes.extend(_erasure(p) for p in rng.sample(work.people, max(1, people // 30)))
    rng.shuffle(envelopes)  # out of order; an erasure can come before its person's events
    lines = [orjson.dumps(e) for e in envelopes]
    for _ in range(max(1, len(lines) // 50)):  # duplicates
        lines.insert(rng.randrange(len(lines)), rng.choice(lines))
    bad = poison(rng, max(1, len(lines) // 50))
    for line in bad:
        lines.insert(rng.randrange(len(lines)), line)
    work.lines, work.bad = lines, len(bad)
    work.applied = {eid for p in work.people if not p.erased for eid in p.events}
    return work


def poison(rng: random.Random, count: int) -> list[bytes]:
    """Bad records of every kind the worker must send to the DLQ."""
    kinds: list[Callable[[int], bytes]] = [
        lambda n: b"{not json " + str(n).encode(),
        lambda n: b"\xff\xfe\x00" + bytes([n % 256]),
        lambda n: orjson.dumps({"event_id": f"bad-{n}", "type": "profile.exploded"}),
        lambda n: orjson.dumps(
            {
                "event_id": f"bad-{n}",
                "type": "chat.message",
                "occurred_at": "2026-11-02T00:00:00Z",
                "source": "wecom",
                "customer": {"im_id": "x"},
                "payload": {},
            }
        ),
        lambda n: orjson.dumps(
            {
                "event_id": f"bad-{n}",
                "type": "channel.event",
                "occurred_at": "2026-11-02T00:00:00Z",
                "source": "app",
                "customer": {"phone": "00000000000"},
                "payload": {"action": "login"},
            }
        ),
    ]
    return [rng.choice(kinds)(rng.randrange(10**9)) for _ in range(count)]
