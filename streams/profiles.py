"""The profiles topic (DESIGN.md "Profiles topic"): the whole current document per key.

``portrait.profiles`` is compacted and keyed by customer id (account number for
accounts), so a subscriber that starts late reads it from the beginning and has every
live profile. The worker publishes it from ``portrait.profile-changes`` (its own Faust
agent, ``streams/app.py``), apart from the input pipeline: a batch of changes costs one
load per customer or account it names, however many events changed them, and the input
path never builds a whole document for it.

Each named key is published as it is in Redis *now*: the document when it is live, a
tombstone (null value) when it is not — merged away (``profile.merged``'s
``merged_id``) or erased. Publishing the current state rather than the event's makes a
redelivered or out-of-order change harmless: the last record of a key is the newest
state read. (The local broker, Tansu, drops records with a null value; Apache Kafka keeps
them until compaction removes the key.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

from models.customer_model import CustomerModel
from portrait.config import Settings
from portrait.lookup import get_account, profiles_by_id
from portrait.state.store import RedisProfileStore
from processors.document import DocumentSettings
from processors.layout import ACCOUNT_ENTITY
from streams.records import OutputRecord
from streams.replay import customer_ids

PERSON, ACCOUNT = "person", "account"
SNAPSHOT_BATCH = 200


def named_keys(changes: Sequence[bytes | None]) -> dict[tuple[str, str], None]:
    """The (kind, key) pairs a batch of ``portrait.profile-changes`` values names, in
    order, each once."""
    named: dict[tuple[str, str], None] = {}
    for raw in changes:
        try:
            change = orjson.loads(raw or b"")
        except orjson.JSONDecodeError:
            continue
        if not isinstance(change, dict):
            continue
        if change.get("type") == "account.changed" and change.get("account_no"):
            named[(ACCOUNT, str(change["account_no"]))] = None
            continue
        for name in ("customer_id", "merged_id"):
            if change.get(name):
                named[(PERSON, str(change[name]))] = None
    return named


async def profile_records(
    changes: Sequence[bytes | None],
    store: RedisProfileStore,
    model: CustomerModel,
    settings: Settings,
    document: DocumentSettings,
) -> list[OutputRecord]:
    """The ``portrait.profiles`` records for a batch of changes: each named key's document
    as it is now, or a tombstone (the people read and scored together)."""
    topic = settings.topic("profiles")
    named = list(named_keys(changes))
    people = await profiles_by_id(
        store, [key for kind, key in named if kind == PERSON], model, document
    )
    out = []
    for kind, key in named:
        found: dict[str, Any] | None
        if kind == ACCOUNT:
            found = await get_account(store, key, document)
        else:
            found = people[key]
        value = orjson.dumps(found) if found is not None else None
        out.append(OutputRecord(topic, key.encode(), value))
    return out


async def snapshot(
    settings: Settings,
    store: RedisProfileStore,
    model: CustomerModel,
    document: DocumentSettings,
    write: Callable[[bytes], object],
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write every live profile in Redis, one JSON document per line (``portrait snapshot``);
    returns how many. ``progress`` gets (written, total)."""
    people = [cid for cid in await customer_ids(store) if not cid.startswith(ACCOUNT_ENTITY)]
    written = 0
    for start in range(0, len(people), SNAPSHOT_BATCH):
        chunk = people[start : start + SNAPSHOT_BATCH]
        documents = await profiles_by_id(store, chunk, model, document)
        for customer_id in chunk:
            found = documents[customer_id]
            if found is not None:  # erased or merged away since the scan
                write(orjson.dumps(found) + b"\n")
                written += 1
        if progress is not None:
            progress(start + len(chunk), len(people))
    return written
