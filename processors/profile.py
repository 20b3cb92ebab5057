"""The profile: what each input event changes, and the document built from stored state.

An event becomes a :class:`ProfileDelta` made only of operations that commute — counters
that add, decayed weights that add, min/max timestamps, last-writer-wins registers
(attributes, tags) and set unions (identifiers). The state script applies a delta and,
with the same operations, merges two customers; so any order of the same events, and any
merge order, leaves the same profile content.

:func:`document_from_state` turns stored state (as the state script returns it) into the
profile document of DESIGN.md; :func:`changed_fields` lists what differs between two.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

import orjson

from portrait.events import (
    CallStarted,
    ChannelEvent,
    ChatMessage,
    CustomerErasure,
    InputEvent,
    ProfileEdited,
    SourceImported,
)
from processors.attributes import (
    encode_register,
    normalise_attribute_name,
    normalise_attribute_value,
    order_key,
)
from processors.identity import customer_id_for, identifier_keys, split_identifier_key
from processors.preferences import decay_weight, heaviest, time_of_day

MANUAL_SOURCE = "manual"


@dataclass(frozen=True, slots=True)
class DeltaSettings:
    """The settings that shape deltas."""

    timezone: ZoneInfo
    half_life_days: float = 30.0
    attribute_confidence: float = 0.9


@dataclass(slots=True)
class ProfileDelta:
    """The state change one input event asks for; applied atomically by the state script."""

    event_id: str
    event_type: str
    occurred_ms: int
    identifiers: list[str]
    new_customer_id: str
    erase: bool = False
    counters: dict[str, int] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def to_json(self, now_ms: int, retention_ms: int) -> bytes:
        """The delta as the state script reads it (its ARGV)."""
        return orjson.dumps(
            {
                "eid": self.event_id,
                "type": self.event_type,
                "ts": self.occurred_ms,
                "now": now_ms,
                "ret": retention_ms,
                "ids": self.identifiers,
                "newcid": self.new_customer_id,
                "erase": self.erase,
                "cnt": self.counters,
                "dec": self.weights,
                "attr": self.attributes,
                "tag": self.tags,
            }
        )


def _to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _counts_as_activity(event: InputEvent) -> bool:
    """Events the customer initiated at that moment shape the channel and time preferences."""
    if isinstance(event, ChatMessage):
        return event.payload.direction == "inbound"
    return isinstance(event, CallStarted | ChannelEvent)


def _attribute_registers(
    values: dict[str, Any], source: str, confidence: float, manual: bool, event: InputEvent
) -> dict[str, str]:
    occurred_ms = _to_ms(event.occurred_at)
    order = order_key(manual, occurred_ms, event.event_id)
    updated_at = iso_from_ms(occurred_ms)
    registers = {}
    for raw_name, raw_value in values.items():
        name = normalise_attribute_name(raw_name)
        if not name:
            continue
        payload = {
            "value": normalise_attribute_value(name, raw_value),
            "source": source,
            "confidence": confidence,
            "updated_at": updated_at,
        }
        registers[name] = encode_register(order, payload)
    return registers


def build_delta(event: InputEvent, settings: DeltaSettings) -> ProfileDelta:
    """The state change for one validated input event."""
    identifiers = identifier_keys(event.customer)
    occurred_ms = _to_ms(event.occurred_at)
    delta = ProfileDelta(
        event_id=event.event_id,
        event_type=event.type,
        occurred_ms=occurred_ms,
        identifiers=identifiers,
        new_customer_id=customer_id_for(identifiers[0]),
    )
    if isinstance(event, CustomerErasure):
        delta.erase = True
        return delta

    delta.counters = {"events_total": 1, f"ch:{event.source}": 1}
    if _counts_as_activity(event):
        weight = decay_weight(occurred_ms, settings.half_life_days)
        bucket = time_of_day(event.occurred_at, settings.timezone)
        delta.weights = {f"ch:{event.source}": weight, f"tod:{bucket}": weight}

    if isinstance(event, ChannelEvent):
        delta.attributes = _attribute_registers(
            event.payload.attributes, event.source, settings.attribute_confidence, False, event
        )
    elif isinstance(event, SourceImported):
        confidence = event.payload.confidence
        delta.attributes = _attribute_registers(
            event.payload.attributes,
            event.source,
            settings.attribute_confidence if confidence is None else confidence,
            False,
            event,
        )
    elif isinstance(event, ProfileEdited):
        edits: dict[str, Any] = dict(event.payload.set)
        edits.update({name: None for name in event.payload.unset})
        delta.attributes = _attribute_registers(edits, MANUAL_SOURCE, 1.0, True, event)
        order = order_key(True, occurred_ms, event.event_id)
        delta.tags = {tag: f"{order}\t0" for tag in event.payload.tags_remove}
        delta.tags.update({tag: f"{order}\t1" for tag in event.payload.tags_add})
    return delta


# --- stored state → document ----------------------------------------------------------


class StoredState(TypedDict):
    """One customer's state as the state script returns it (hash sections and id set)."""

    meta: dict[str, str]
    cnt: dict[str, str]
    dec: dict[str, str]
    attr: dict[str, str]
    tag: dict[str, str]
    ids: list[str]


def empty_state() -> StoredState:
    """The state of a customer that does not exist yet."""
    return {"meta": {}, "cnt": {}, "dec": {}, "attr": {}, "tag": {}, "ids": []}


def iso_from_ms(ms: int | float) -> str:
    """RFC 3339 UTC timestamp with milliseconds."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _prefixed(section: dict[str, str], prefix: str) -> dict[str, str]:
    return {k[len(prefix) :]: v for k, v in section.items() if k.startswith(prefix)}


def document_from_state(customer_id: str, state: StoredState) -> dict[str, Any]:
    """The profile document (DESIGN.md "Profile document") for stored state."""
    meta = state["meta"]
    identifiers: dict[str, list[str]] = {
        "phone": [],
        "account_no": [],
        "im_id": [],
        "email": [],
        "customer_id": [],
    }
    for key in sorted(state["ids"]):
        kind, value = split_identifier_key(key)
        identifiers.setdefault(kind, []).append(value)

    attributes = {}
    for name in sorted(state["attr"]):
        payload = orjson.loads(state["attr"][name].split("\t", 1)[1])
        if payload.get("value") is not None:
            attributes[name] = payload

    tags = sorted(tag for tag, stored in state["tag"].items() if stored.endswith("\t1"))
    by_channel = {k: int(v) for k, v in sorted(_prefixed(state["cnt"], "ch:").items())}
    channel_weights = {k: float(v) for k, v in _prefixed(state["dec"], "ch:").items()}
    tod_weights = {k: float(v) for k, v in _prefixed(state["dec"], "tod:").items()}

    first_seen = meta.get("first_seen")
    last_seen = meta.get("last_seen")
    return {
        "customer_id": customer_id,
        "version": int(meta.get("version", 0)),
        "identifiers": identifiers,
        "attributes": attributes,
        "tags": tags,
        "stats": {
            "events_total": int(state["cnt"].get("events_total", 0)),
            "by_channel": by_channel,
            "first_seen": iso_from_ms(int(first_seen)) if first_seen else None,
            "last_seen": iso_from_ms(int(last_seen)) if last_seen else None,
        },
        "preferences": {
            "channel": heaviest(channel_weights),
            "time_of_day": heaviest(tod_weights),
        },
        "emotion": {"last": None, "average": None, "negative_streak": 0},
        "keywords": [],
        "indicators": {
            "activity": None,
            "credit": None,
            "wealth": None,
            "campaign_participation": None,
            "influence": None,
        },
        "scores": {
            "value": None,
            "loyalty": None,
            "churn_risk": None,
            "priority": None,
            "model_version": None,
        },
        "relationships": [],
        "needs": [],
    }


def state_before(after: StoredState, old: dict[str, Any], ids_added: list[str]) -> StoredState:
    """Reconstruct the state before an update from the state after it and the old values.

    ``old`` maps section → field → the value before (``False`` where the field was absent),
    for every field the update touched; untouched fields are the same before and after.
    """
    before = empty_state()
    for section in ("meta", "cnt", "dec", "attr", "tag"):
        merged = dict(after[section])  # type: ignore[literal-required]
        for name, value in (old.get(section) or {}).items():
            if value is False:
                merged.pop(name, None)
            else:
                merged[name] = value
        before[section] = merged  # type: ignore[literal-required]
    added = set(ids_added)
    before["ids"] = [key for key in after["ids"] if key not in added]
    return before


def changed_fields(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Top-level fields whose values differ, each with its old and new value."""
    return [
        {"field": name, "old": old.get(name), "new": value}
        for name, value in new.items()
        if old.get(name) != value
    ]
