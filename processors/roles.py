"""Roles and permissions (seed 002 "角色与权限"): who the customer is on each account.

A ``role`` attribute that arrives with an ``account_no`` (from a channel event or an
import) is the customer's role on that account: stored as the register
``r:role:<account>`` (latest by ``occurred_at`` wins), and shown in ``profile.roles`` with
the business that role may handle, from the role → permission table in configuration
(``PORTRAIT_ROLES_FILE``, default ``portrait/settings/roles.json``). An unknown role has
no permissions.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from processors.attributes import event_order, normalise_attribute_name
from processors.layout import ROLE as ROLE_FIELD

ROLE = ROLE_FIELD[2:]


def role_fields(
    attributes: Mapping[str, Any], accounts: list[str], occurred_ms: int, event_id: str
) -> dict[str, int | float | str]:
    """Role registers for each account of the event, when the attributes name a role."""
    role = attributes.get("role")
    if not isinstance(role, str) or not role.strip() or not accounts:
        return {}
    name = normalise_attribute_name(role)
    order = event_order(occurred_ms, event_id)
    return {f"r:{ROLE}{account}": f"{order}\t{name}" for account in accounts}


def roles(
    registers: Mapping[str, str], permissions: Mapping[str, list[str]]
) -> list[dict[str, Any]]:
    """``profile.roles``: per account, the role and what it may handle; by account."""
    out = []
    for name in sorted(registers):
        if name.startswith(ROLE):
            role = registers[name].split("\t", 1)[1]
            out.append(
                {
                    "account_no": name[len(ROLE) :],
                    "role": role,
                    "permissions": sorted(permissions.get(role, [])),
                }
            )
    return out
