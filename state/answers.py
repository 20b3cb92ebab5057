"""The state script's answer, parsed: what applying one delta did (:class:`ApplyResult`),
and the errors a call can end with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from redis.exceptions import ResponseError

from processors.accounts import AccountState
from processors.assist import CallAdvice
from processors.document import StoredState
from processors.layout import (
    ABSENT,
    ACCOUNT_ENTITY,
    ENTITY_SEP,
    FAMILIES,
    MEMBER_SEP,
    NEGATIVE_STREAK,
    STATUSES,
    VIEW_SEP,
    Family,
)
from processors.layout import RECORD_SEP as RS
from processors.layout import UNIT_SEP as US


def text_of(value: bytes | str) -> str:
    """A Redis reply as text."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


# Errors that say Redis cannot write now, not that the event's data is bad: the batch is
# retried rather than its events sent to the DLQ.
_REDIS_UNWELL = ("OOM", "BUSY", "LOADING", "READONLY", "MASTERDOWN", "NOREPLICAS", "MISCONF")


class RedisUnwell(ConnectionError):
    """Redis refused a write for a reason of its own; retry later."""


def parse_position(position: str) -> tuple[int, int] | None:
    """(generation, offset) of a stored input position ``"<generation>:<offset>"``
    (``streams/offsets.py``); None when there is none."""
    generation, _, offset = position.partition(":")
    return (int(generation), int(offset)) if offset else None


class StaleOffsets(Exception):
    """The state script refused a chunk: a partition's stored position is not the one
    this worker expected (``streams/offsets.py``). Either Redis lost writes (it is
    behind: the worker must start that partition again from Redis's position) or a newer
    consumer generation owns the partition (this worker is a zombie)."""

    @classmethod
    def of(cls, error: ResponseError) -> StaleOffsets | None:
        """The script's ``STALE_OFFSETS <partition> <stored> <expected>`` error, or None
        for any other."""
        words = str(error).split()
        if words[:1] == ["STALE_OFFSETS"] and len(words) == 4:
            return cls(*words[1:])
        return None

    def __init__(self, partition: str, stored: str, expected: str) -> None:
        super().__init__(f"{partition}: stored {stored}, expected {expected}")
        self.partition, self.stored, self.expected = partition, stored, expected

    @property
    def fenced(self) -> bool:
        """A newer generation claimed the partition (not a loss of writes)."""
        stored, expected = parse_position(self.stored), parse_position(self.expected)
        return stored is not None and expected is not None and stored[0] > expected[0]


def _error_kind(message: str) -> str:
    """A short, value-free name for a script error (no event data in it)."""
    if "cjson" in message or "JSON" in message or "Expected" in message:
        return "malformed_delta"
    return "script_error"


def _split(text: str) -> list[str]:
    return text.split(US) if text else []


def _pairs(text: str) -> dict[str, str]:
    items = _split(text)
    return dict(zip(items[::2], items[1::2], strict=True))


def _account(text: str) -> tuple[str, AccountState]:
    number, hash_pairs, people, notify = text.split(VIEW_SEP)
    return number, AccountState(_pairs(hash_pairs), _pairs(people), tuple(_split(notify)))


@dataclass(slots=True)
class Applied:
    """``ok``: the delta was applied to a person (or, inside :class:`AccountsApplied`, to
    an account).

    For a person: ``state`` is what the document reads (None for a replay's quiet
    delta), ``old`` each changed field's value before, ``merged`` the people merged
    into this one, ``accounts`` the accounts the person holds (with their people for
    the accounts the event named), ``links_added`` the accounts linked by this event or
    its merges, ``rejections`` the identifiers the identity rules rejected (kind,
    reason), ``prompt`` the call advice when it changed. For an account:
    ``account_no`` is its number and ``people`` its people.
    """

    status: ClassVar[str] = STATUSES["OK"]
    customer_id: str
    merged: list[str] = field(default_factory=list)
    state: StoredState | None = None
    old: dict[str, str | None] = field(default_factory=dict)
    ids_added: list[str] = field(default_factory=list)
    prompt: CallAdvice | None = None
    accounts: dict[str, AccountState] = field(default_factory=dict)
    links_added: list[str] = field(default_factory=list)
    rejections: list[tuple[str, str]] = field(default_factory=list)
    account_no: str | None = None
    people: dict[str, str] = field(default_factory=dict)
    notify: list[str] = field(default_factory=list)


@dataclass(slots=True)
class AccountsApplied:
    """``acct``: an event with no person identifier, applied to each account it names."""

    status: ClassVar[str] = STATUSES["ACCOUNTS"]
    accounts: list[Applied] = field(default_factory=list)


@dataclass(slots=True)
class Erased:
    """``erased``: an erasure removed these customers."""

    status: ClassVar[str] = STATUSES["ERASED"]
    erased: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Suppressed:
    """``suppressed``: an event of an erased person from before the erasure, dropped;
    ``erased`` lists the people it showed were the erased person's (erased too)."""

    status: ClassVar[str] = STATUSES["SUPPRESSED"]
    erased: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Noop:
    """``noop``: an erasure for no known customer."""

    status: ClassVar[str] = STATUSES["NOOP"]


@dataclass(slots=True)
class Duplicate:
    """``dup``: seen before. ``replay``: what the first time answered, when its outputs
    are still pending delivery (they go out again, the same)."""

    status: ClassVar[str] = STATUSES["DUP"]
    customer_id: str | None = None
    replay: Applied | AccountsApplied | Erased | None = None


@dataclass(slots=True)
class Failed:
    """``error``: the script failed on this event's data; nothing of it was applied
    (``error``: a short, value-free kind)."""

    status: ClassVar[str] = STATUSES["ERROR"]
    error: str = "script_error"


ApplyResult = Applied | AccountsApplied | Erased | Suppressed | Noop | Duplicate | Failed
"""What applying one delta did: one type per answer status of the state script."""


def replay_of(result: ApplyResult) -> Applied | AccountsApplied | Erased | None:
    """What a duplicate's first time answered, when its outputs are still pending."""
    return result.replay if isinstance(result, Duplicate) else None


def parse_answer(answer: bytes) -> ApplyResult:
    """The state script's answer to one delta."""
    text = answer.decode("utf-8")
    parts = text.split(RS)
    status = parts[0]
    if status == Failed.status:
        message = parts[1] if len(parts) > 1 else ""
        if message.startswith(_REDIS_UNWELL):
            raise RedisUnwell(message.split(" ", 1)[0])
        return Failed(_error_kind(message))
    if status == Erased.status:
        return Erased(_split(parts[1]))
    if status == Suppressed.status:
        return Suppressed(_split(parts[1]))
    if status == AccountsApplied.status:
        return AccountsApplied(_accounts(text.split(RS, 1)[1]))
    if status == Duplicate.status:
        return _duplicate(parts)
    if status == Applied.status:
        if len(parts) == 2:  # a quiet delta: the customer id only
            return Applied(parts[1])
        return _applied(parts[1], parts[2:])
    return Noop()


def _duplicate(parts: list[str]) -> Duplicate:
    if len(parts) > 2 and parts[1] == Erased.status:
        return Duplicate(replay=Erased(_split(parts[2])))
    if len(parts) > 2 and parts[1] == AccountsApplied.status:
        return Duplicate(replay=AccountsApplied(_accounts(RS.join(parts[2:]))))
    customer_id = parts[1] if len(parts) > 1 else None
    replay = _applied(customer_id or "", parts[2:]) if len(parts) > 2 else None
    return Duplicate(customer_id, replay)


def _accounts(text: str) -> list[Applied]:
    """Each account's answer of an account-only event: number RS body, by ES."""
    out = []
    for entity in text.split(ENTITY_SEP):
        number, *body = entity.split(RS)
        result = _applied(ACCOUNT_ENTITY + number, body)
        result.account_no = number
        out.append(result)
    return out


def _applied(customer_id: str, body: list[str]) -> Applied:
    merged, ids_added, ids, after, before, prompt, views, links, added, rejected, notify = body
    fields = _pairs(after)
    for family, view in zip(FAMILIES, views.split(VIEW_SEP), strict=True):
        if view:
            fields.update(family_fields(family, view.split(MEMBER_SEP)))
    is_account = customer_id.startswith(ACCOUNT_ENTITY)
    rejections = _split(rejected)
    return Applied(
        customer_id,
        merged=_split(merged),
        state={"fields": fields, "ids": _split(ids)},
        old={k: (None if v == ABSENT else v) for k, v in _pairs(before).items()},
        ids_added=_split(ids_added),
        prompt=CallAdvice.parse(_split(prompt)) if prompt else None,
        accounts={} if is_account or not links else dict(map(_account, links.split(MEMBER_SEP))),
        links_added=_split(added),
        rejections=list(zip(rejections[::2], rejections[1::2], strict=True)),
        people=_pairs(links) if is_account else {},
        notify=_split(notify),
    )


def family_fields(family: Family, members: Sequence[Any]) -> dict[str, str]:
    """A family's members as the sorted set holds them (for ``heaviest`` families, name
    and score one after the other, the score being minus the weight; for the negatives,
    their number alone) as profile fields: ``prefix + name`` → value."""
    prefix = family.prefix
    if family.keep == "since_calm":
        return {NEGATIVE_STREAK: text_of(members[0])}
    if family.keep == "heaviest":
        pairs = zip(members[::2], members[1::2], strict=True)
        return {prefix + text_of(name): repr(-float(score)) for name, score in pairs}
    out = {}
    for member in members:
        name, value = text_of(member).split(US, 1)
        out[prefix + name] = value
    return out
