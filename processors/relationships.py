"""Employees and the customer (seed 000 "关系获取", "信息同步"): closeness and who to notify.

Owns ``profile.relationships`` and the ``notify`` list of profile events. Stored, per
employee, as commutative profile-hash fields (see ``apply_event.lua``):

- ``r:friend:<employee>`` — register "order\\tadded|removed": the latest friend change wins;
- ``r:grp:<employee>:<8 hex>`` — the same for each shared group (the group id is hashed so
  that any characters it holds cannot break the field name);
- ``c:msg:<employee>`` — messages exchanged with that employee, both directions, and
  calls handled by them;
- ``d:emp:<employee>`` — the same interactions weighted by recency (as the preferences);
- ``r:met:<employee>`` — when the latest of those interactions occurred (13-digit epoch
  ms; the larger wins): an agent reads the profiles of the customers it is connected to
  (:func:`is_connected`).

Closeness, in 0…1, for each employee with any of these::

    score = friend_weight · [friends] + group_weight · (shared groups)
          + message_weight · log(1 + interactions) + recency_weight · (recency share)
    closeness = score / (score + 3)

where the recency share is this employee's part of the customer's recency-weighted
interactions. Removed relations stop counting. ``notify`` lists the employees with an
active friend or group relation.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from processors.attributes import event_order, order_time
from processors.layout import ACTIONS, FRIEND, GROUP, MET

MESSAGES, RECENT = "msg:", "emp:"
GROUP_HASH_HEX = 8
"""Hex digits of the group id's hash in a group register's name."""


@dataclass(frozen=True, slots=True)
class ClosenessWeights:
    """The configurable weights of the closeness formula (module docstring)."""

    friend: float = 3.0
    group: float = 1.0
    message: float = 0.5
    recency: float = 1.0


def relation_fields(
    employee_id: str,
    relation: str,
    action: str,
    group_id: str | None,
    occurred_ms: int,
    event_id: str,
) -> dict[str, int | float | str]:
    """The register a ``relation.changed`` event writes."""
    register = f"{event_order(occurred_ms, event_id)}\t{action}"
    if relation == "friend":
        return {f"r:{FRIEND}{employee_id}": register}
    digest = hashlib.sha256((group_id or "").encode()).hexdigest()[:GROUP_HASH_HEX]
    return {f"r:{GROUP}{employee_id}:{digest}": register}


def interaction_fields(
    employee_id: str, weight: float, occurred_ms: int
) -> dict[str, int | float | str]:
    """Counters for one message or call between the customer and an employee, and when
    it occurred."""
    return {
        f"c:{MESSAGES}{employee_id}": 1,
        f"d:{RECENT}{employee_id}": weight,
        f"r:{MET}{employee_id}": f"{max(occurred_ms, 0):013d}",
    }


def relation_field_names(employee_id: str) -> tuple[str, str, str]:
    """The profile-hash fields that connect an employee to a customer: the friend and
    met registers, and the pattern of the group registers."""
    return f"r:{FRIEND}{employee_id}", f"r:{MET}{employee_id}", f"r:{GROUP}{employee_id}:*"


def is_connected(registers: dict[str, str], employee_id: str, since_ms: int) -> bool:
    """True when the employee is a friend of the customer, shares an active group with
    them, or had a call or chat with them at ``since_ms`` or later (``registers``: the
    profile hash, or at least the fields of :func:`relation_field_names`, by full name)."""
    friend, met, groups = relation_field_names(employee_id)
    if _active(registers.get(friend, "")):
        return True
    prefix = groups[:-1]
    if any(
        _active(v) and _is_group_hash(k[len(prefix) :])
        for k, v in registers.items()
        if k.startswith(prefix)
    ):
        return True
    stamp = registers.get(met, "")
    return stamp.isdigit() and int(stamp) >= since_ms


ACTION = ACTIONS.prefix
ACTIONS_SHOWN = ACTIONS.shown


def action_fields(
    employee_id: str, action: str, occurred_ms: int, event_id: str
) -> dict[str, int | float | str]:
    """One action of the customer towards an employee, for the capped trail (newest kept)."""
    return {f"{ACTION}{event_order(occurred_ms, event_id)}\t{employee_id}": action}


def actions_towards_employees(trail: dict[str, str]) -> list[dict[str, Any]]:
    """``profile.actions``: the newest actions towards employees first (at most 50)."""
    return [_action(name, trail[name]) for name in sorted(trail, reverse=True)[:ACTIONS_SHOWN]]


@lru_cache(maxsize=65_536)
def _action(name: str, action: str) -> dict[str, Any]:
    """One entry of ``profile.actions`` (shared between documents: do not mutate). A
    trail member is shown by 50 updates in a row: built once, and the old and new
    trails of a change compare by identity where they share members."""
    order, employee = name.split("\t", 1)
    return {"employee_id": employee, "action": action, "occurred_at": order_time(order)}


def _is_group_hash(rest: str) -> bool:
    """True when what follows ``r:grp:<employee>:`` is only a group hash: the field of
    employee ``a:b`` (``r:grp:a:b:<hash>``) does not connect employee ``a``."""
    return len(rest) == GROUP_HASH_HEX and all(c in "0123456789abcdef" for c in rest)


def _active(register: str) -> bool:
    return register.endswith("\tadded")


def became_friend(employee_id: str, before: dict[str, str], after: dict[str, str]) -> bool:
    """True when an update made the employee a friend (``r:`` sections before and after);
    a late "added" older than a removal changes nothing and returns False."""
    field = FRIEND + employee_id
    now = after.get(field, "")
    return _active(now) and before.get(field) != now


def _active_relations(registers: dict[str, str]) -> tuple[set[str], dict[str, int]]:
    """Active friends, and the number of active shared groups per employee."""
    friends: set[str] = set()
    groups: dict[str, int] = {}
    for name, register in registers.items():
        if not _active(register):
            continue
        if name.startswith(FRIEND):
            friends.add(name[len(FRIEND) :])
        elif name.startswith(GROUP):
            employee = name[len(GROUP) : -(GROUP_HASH_HEX + 1)]  # drop ":" and the hash
            groups[employee] = groups.get(employee, 0) + 1
    return friends, groups


def connected_employees(registers: dict[str, str]) -> list[str]:
    """Employees with an active friend or group relation (``r:`` section), sorted."""
    friends, groups = _active_relations(registers)
    return sorted(friends | set(groups))


def relationships(
    registers: dict[str, str],
    counts: dict[str, str],
    weights: dict[str, str],
    formula: ClosenessWeights,
) -> list[dict[str, Any]]:
    """``profile.relationships``: employees by closeness, closest first (ties: by id)."""
    friends, groups = _active_relations(registers)
    messages = {k[len(MESSAGES) :]: int(v) for k, v in counts.items() if k.startswith(MESSAGES)}
    recent = {k[len(RECENT) :]: float(v) for k, v in weights.items() if k.startswith(RECENT)}
    total_recent = sum(recent.values())
    ranked: list[tuple[float, str]] = []
    for employee in friends | set(groups) | set(messages):
        score = (
            formula.friend * (employee in friends)
            + formula.group * groups.get(employee, 0)
            + formula.message * math.log1p(messages.get(employee, 0))
            + formula.recency * (recent.get(employee, 0.0) / total_recent if total_recent else 0)
        )
        ranked.append((round(score / (score + 3.0), 4), employee))
    ranked.sort(key=lambda item: (-item[0], item[1]))
    return [{"employee_id": employee, "closeness": closeness} for closeness, employee in ranked]
