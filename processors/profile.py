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

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict
from zoneinfo import ZoneInfo

import orjson

from models.emotion import EmotionResult
from portrait.events import (
    CallStarted,
    ChannelEvent,
    ChatMessage,
    CustomerErasure,
    FeedbackRecorded,
    InputEvent,
    ProfileEdited,
    RelationChanged,
    SourceImported,
)
from processors.assist import (
    AssistSettings,
    ProductStats,
    call_session_delta,
    feedback_counts,
    product_fields,
    products_document,
)
from processors.attributes import (
    decode_register,
    encode_register,
    iso_from_ms,
    normalise_attribute_name,
    normalise_attribute_value,
    order_key,
)
from processors.document import DocumentSettings
from processors.emotion import emotion_document, emotion_fields, text_to_read
from processors.facts import SourcedFact
from processors.identity import (
    customer_id_for,
    identifier_keys,
    normalise_identifier,
    split_identifier_key,
)
from processors.indicators import indicators
from processors.intents import intent_fields, intents_document
from processors.keywords import KEYWORD, keyword_fields, keywords_document
from processors.needs import needs
from processors.preferences import decay_weight, time_of_day
from processors.problems import problem_fields, problems_document, resolution_fields
from processors.relationships import (
    action_fields,
    actions_towards_employees,
    interaction_fields,
    relation_fields,
    relationships,
)
from processors.roles import role_fields, roles
from processors.scores import EMPTY_SCORES

DEFAULT_DOCUMENT = DocumentSettings()

MANUAL_SOURCE = "manual"
HOLDING_ACTIONS = frozenset({"purchase", "business_handled"})
_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,64}")  # what an action name may be (no separators)


@dataclass(frozen=True, slots=True)
class DeltaSettings:
    """The settings that shape deltas."""

    timezone: ZoneInfo
    half_life_days: float = 30.0
    attribute_confidence: float = 0.9
    assist: AssistSettings = field(default_factory=AssistSettings)
    link_fact_identities: bool = False  # extracted phones/emails join identities too
    problem_intents: tuple[str, ...] = ("complaint", "outage", "billing", "repair")
    trends_window_ms: int = 3_600_000
    trends_retention_ms: int = 7 * 86_400_000


@dataclass(slots=True)
class ProfileDelta:
    """The state change one input event asks for; applied atomically by the state script.

    ``fields`` maps profile hash fields to operands; the field prefix says how the script
    combines them (``c:`` add integer, ``d:`` add weight, ``a:``/``t:`` keep the larger
    register). ``first_seen``/``last_seen`` come from ``occurred_ms``.
    """

    event_id: str
    occurred_ms: int
    identifiers: list[str]
    new_customer_id: str
    erase: bool = False
    fields: dict[str, int | float | str] = field(default_factory=dict)
    product_stats: dict[str, int] = field(default_factory=dict)
    call: dict[str, Any] | None = None
    """The call session change (``processors.assist.call_session_delta``)."""
    trend: dict[str, Any] | None = None
    """Group-analysis counts: window start ms ``w``, expiry ms ``exp``, hash fields ``keys``."""

    def to_json(self, now_ms: int, retention_ms: int, *, quiet: bool = False) -> bytes:
        """The delta as the state script reads it (its ARGV). ``quiet`` (replay): the
        script answers only the customer id and keeps nothing pending for delivery."""
        body: dict[str, Any] = {
            "eid": self.event_id,
            "ts": self.occurred_ms,
            "now": now_ms,
            "ret": retention_ms,
            "ids": self.identifiers,
            "newcid": self.new_customer_id,
            "erase": self.erase,
            "fields": self.fields,
            "stats": self.product_stats,
        }
        if self.call is not None:  # the script's JSON null would read as true
            body["call"] = self.call
        if self.trend is not None:
            body["trend"] = self.trend
        if quiet:
            body["quiet"] = True
        return orjson.dumps(body)


def _to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _counts_as_activity(event: InputEvent) -> bool:
    """Events the customer initiated at that moment shape the channel and time preferences."""
    if isinstance(event, ChatMessage):
        return event.payload.direction == "inbound"
    return isinstance(event, (CallStarted, ChannelEvent))


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
        registers[ATTRIBUTE + name] = encode_register(order, payload)
    return registers


def build_delta(
    event: InputEvent,
    settings: DeltaSettings,
    emotion: EmotionResult | None = None,
    product_stats: Mapping[str, Mapping[str, ProductStats]] | None = None,
    facts: Sequence[SourcedFact] = (),
    keywords: Sequence[str] = (),
    intent: str | None = None,
) -> ProfileDelta:
    """The state change for one validated input event (and its text's emotion, if read);
    ``product_stats`` (phase → product) ranks the products a call turn may recommend;
    ``facts`` are what the extractors found in its text and images (source, fact);
    ``keywords`` and ``intent`` those of the customer's words in it."""
    identifiers = identifier_keys(event.customer)
    if settings.link_fact_identities:
        for _, fact in facts:
            if fact.name in ("phone", "email"):
                key = f"{fact.name}:{normalise_identifier(fact.name, fact.value)}"
                if key not in identifiers:
                    identifiers.append(key)
    occurred_ms = _to_ms(event.occurred_at)
    delta = ProfileDelta(
        event_id=event.event_id,
        occurred_ms=occurred_ms,
        identifiers=identifiers,
        new_customer_id=customer_id_for(identifiers[0]),
    )
    if isinstance(event, CustomerErasure):
        delta.erase = True
        return delta

    fields: dict[str, int | float | str] = {
        COUNT + "events_total": 1,
        COUNT + "ch:" + event.source: 1,
    }
    if emotion is not None:
        fields.update(emotion_fields(emotion, occurred_ms, event.event_id, settings.half_life_days))
    if _counts_as_activity(event):
        weight = decay_weight(occurred_ms, settings.half_life_days)
        bucket = time_of_day(event.occurred_at, settings.timezone)
        fields[WEIGHT + "ch:" + event.source] = weight
        fields[WEIGHT + "tod:" + bucket] = weight

    if isinstance(event, RelationChanged):
        payload = event.payload
        fields.update(
            action_fields(
                payload.employee_id,
                f"{payload.relation}_{payload.action}",
                occurred_ms,
                event.event_id,
            )
        )
        fields.update(
            relation_fields(
                payload.employee_id,
                payload.relation,
                payload.action,
                payload.group_id,
                occurred_ms,
                event.event_id,
            )
        )
    elif isinstance(event, ChatMessage):
        weight = decay_weight(occurred_ms, settings.half_life_days)
        fields.update(interaction_fields(event.payload.employee_id, weight))
        if event.payload.direction == "inbound":
            fields.update(
                action_fields(event.payload.employee_id, "message", occurred_ms, event.event_id)
            )
    elif isinstance(event, CallStarted):
        weight = decay_weight(occurred_ms, settings.half_life_days)
        fields.update(interaction_fields(event.payload.agent_id, weight))
        fields.update(action_fields(event.payload.agent_id, "call", occurred_ms, event.event_id))

    if isinstance(event, ChannelEvent | SourceImported):
        accounts = [key.split(":", 1)[1] for key in identifiers if key.startswith("account_no:")]
        fields.update(role_fields(event.payload.attributes, accounts, occurred_ms, event.event_id))
    if isinstance(event, ChannelEvent):
        # behaviour counts and spend feed the customer features (processors/features.py)
        fields[COUNT + "act:" + event.payload.action] = 1
        if event.payload.action in HOLDING_ACTIONS:
            fields.update(product_fields(event.payload.items, "held", occurred_ms, event.event_id))
        if event.payload.amount:
            fields["e:amount"] = float(event.payload.amount)
        fields.update(
            _attribute_registers(
                event.payload.attributes, event.source, settings.attribute_confidence, False, event
            )
        )
    elif isinstance(event, SourceImported):
        for interaction in event.payload.interactions:
            action = interaction.get("action")
            if isinstance(action, str) and _NAME.fullmatch(action):
                fields[COUNT + "act:" + action] = int(fields.get(COUNT + "act:" + action, 0)) + 1
        confidence = event.payload.confidence
        fields.update(
            _attribute_registers(
                event.payload.attributes,
                event.source,
                settings.attribute_confidence if confidence is None else confidence,
                False,
                event,
            )
        )
    elif isinstance(event, ProfileEdited):
        edits: dict[str, Any] = dict(event.payload.set)
        edits.update({name: None for name in event.payload.unset})
        fields.update(_attribute_registers(edits, MANUAL_SOURCE, 1.0, True, event))
        order = order_key(True, occurred_ms, event.event_id)
        for tag in event.payload.tags_remove:
            fields[TAG + tag] = f"{order}\t0"
        for tag in event.payload.tags_add:
            fields[TAG + tag] = f"{order}\t1"
    if isinstance(event, FeedbackRecorded):
        feedback = event.payload
        delta.product_stats = feedback_counts(feedback.phase, feedback.product, feedback.outcome)
        if feedback.product and feedback.outcome in ("accepted", "declined"):
            status = "held" if feedback.outcome == "accepted" else "declined"
            fields.update(product_fields([feedback.product], status, occurred_ms, event.event_id))
    if keywords:
        fields.update(keyword_fields(keywords, decay_weight(occurred_ms, settings.half_life_days)))
    fields.update(intent_fields(intent))
    words = text_to_read(event)
    if words is not None:
        fields.update(
            problem_fields(words, intent, settings.problem_intents, occurred_ms, event.event_id)
        )
    fields.update(resolution_fields(event, occurred_ms))
    if keywords or intent:  # group analysis: counted into the event-time window
        delta.trend = {
            "w": occurred_ms - occurred_ms % settings.trends_window_ms,
            "exp": settings.trends_retention_ms,
            "keys": [f"kw:{term}" for term in keywords] + ([f"in:{intent}"] if intent else []),
        }
    for source, fact in facts:
        fields.update(
            _attribute_registers({fact.name: fact.value}, source, fact.confidence, False, event)
        )
    delta.call = call_session_delta(
        event, emotion.label if emotion else None, product_stats or {}, settings.assist
    )
    delta.fields = fields
    return delta


# --- stored state → document ----------------------------------------------------------

COUNT, WEIGHT, ATTRIBUTE, TAG, META = "c:", "d:", "a:", "t:", "m:"


class StoredState(TypedDict):
    """One customer's state as the state script returns it: the profile hash and id set."""

    fields: dict[str, str]
    ids: list[str]


Sections = dict[str, dict[str, str]]
"""Profile hash fields grouped by their one-letter kind (``m c d a t``), prefix removed."""


def sections_of(fields: dict[str, str]) -> Sections:
    """Group stored fields by kind in one pass."""
    out: Sections = {
        "m": {},
        "c": {},
        "d": {},
        "a": {},
        "t": {},
        "r": {},
        "e": {},
        "n": {},
        "y": {},
    }
    for name, value in fields.items():
        section = out.get(name[0])
        if section is not None:
            section[name[2:]] = value
    return out


def _identifiers(_: Sections, ids: list[str], _settings: DocumentSettings) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {
        "phone": [],
        "account_no": [],
        "im_id": [],
        "email": [],
        "customer_id": [],
    }
    for key in sorted(ids):
        kind, value = split_identifier_key(key)
        out.setdefault(kind, []).append(value)
    return out


def _attributes(sections: Sections, _: list[str], _settings: DocumentSettings) -> dict[str, Any]:
    out = {}
    for name, stored in sorted(sections["a"].items()):
        payload = decode_register(stored)
        if payload.get("value") is not None:
            out[name] = payload
    return out


def _tags(sections: Sections, _: list[str], _settings: DocumentSettings) -> list[str]:
    return sorted(name for name, stored in sections["t"].items() if stored.endswith("\t1"))


def _stats(sections: Sections, _: list[str], _settings: DocumentSettings) -> dict[str, Any]:
    meta, counts = sections["m"], sections["c"]
    first_seen = meta.get("first_seen")
    last_seen = meta.get("last_seen")
    return {
        "events_total": int(counts.get("events_total", 0)),
        "by_channel": {
            name[3:]: int(value) for name, value in sorted(counts.items()) if name[:3] == "ch:"
        },
        "first_seen": iso_from_ms(int(first_seen)) if first_seen else None,
        "last_seen": iso_from_ms(int(last_seen)) if last_seen else None,
    }


def _preferences(sections: Sections, _: list[str], _settings: DocumentSettings) -> dict[str, Any]:
    # One pass over the weights ("ch:<source>" and "tod:<bucket>"); the heaviest wins,
    # ties go to the smaller name.
    channel = bucket = ""
    channel_weight = bucket_weight = -1.0
    for name, value in sections["d"].items():
        weight = float(value)
        if name[:3] == "ch:":
            key = name[3:]
            if weight > channel_weight or (weight == channel_weight and key < channel):
                channel, channel_weight = key, weight
        elif name[:4] == "tod:":
            key = name[4:]
            if weight > bucket_weight or (weight == bucket_weight and key < bucket):
                bucket, bucket_weight = key, weight
    return {"channel": channel or None, "time_of_day": bucket or None}


def _emotion(sections: Sections, _: list[str], _settings: DocumentSettings) -> dict[str, Any]:
    return emotion_document(sections["r"], sections["e"], sections["n"])


def _version(sections: Sections, _: list[str], _settings: DocumentSettings) -> int:
    return int(sections["m"].get("version", 0))


def _relationships(
    sections: Sections, _: list[str], settings: DocumentSettings
) -> list[dict[str, Any]]:
    return relationships(sections["r"], sections["c"], sections["d"], settings.closeness)


def _actions(sections: Sections, _: list[str], __: DocumentSettings) -> list[dict[str, Any]]:
    return actions_towards_employees(sections["y"])


def _roles(sections: Sections, _: list[str], settings: DocumentSettings) -> list[dict[str, Any]]:
    return roles(sections["r"], settings.permissions)


def _indicators(sections: Sections, _: list[str], settings: DocumentSettings) -> dict[str, Any]:
    return indicators(sections, settings.half_life_days, settings.population)


def _products(sections: Sections, _: list[str], _settings: DocumentSettings) -> Any:
    return products_document(sections["r"])


def _keywords(sections: Sections, _: list[str], settings: DocumentSettings) -> Any:
    last_seen = int(sections["m"].get("last_seen", 0))
    latest = decay_weight(last_seen, settings.half_life_days) if last_seen else 1.0
    return keywords_document(sections["d"], latest, settings.keywords_top_k)


def _intents(sections: Sections, _: list[str], _settings: DocumentSettings) -> Any:
    return intents_document(sections["c"])


def _problems(sections: Sections, _: list[str], _settings: DocumentSettings) -> Any:
    return problems_document(sections["r"])


def _needs(sections: Sections, ids: list[str], settings: DocumentSettings) -> Any:
    if not settings.needs_rules:
        return []
    # indicators and emotion are built only when a rule gets as far as them
    return needs(
        settings.needs_rules,
        _intents(sections, ids, settings),
        lambda term: f"{KEYWORD}{term}" in sections["d"],
        lambda: _indicators(sections, ids, settings),
        lambda: int(_emotion(sections, ids, settings)["negative_streak"]),
    )


FIELD_BUILDERS: dict[str, tuple[str, Callable[[Sections, list[str], DocumentSettings], Any]]] = {
    "version": ("m", _version),
    "identifiers": ("", _identifiers),
    "attributes": ("a", _attributes),
    "tags": ("t", _tags),
    "stats": ("cm", _stats),
    "preferences": ("d", _preferences),
    "emotion": ("ren", _emotion),
    "relationships": ("rcd", _relationships),
    "indicators": ("mcdr", _indicators),
    "roles": ("r", _roles),
    "actions": ("y", _actions),
    "products": ("r", _products),
    "keywords": ("dm", _keywords),
    "intents": ("c", _intents),
    "needs": ("cdmren", _needs),
    "problems": ("r", _problems),
}
"""Document fields built from stored state, with the kinds of stored fields they read."""


def document_from_state(
    customer_id: str,
    state: StoredState,
    scores: dict[str, Any] | None = None,
    settings: DocumentSettings = DEFAULT_DOCUMENT,
) -> dict[str, Any]:
    """The profile document (DESIGN.md "Profile document") for stored state.

    ``scores`` is ``profile.scores`` as the customer-feature model gives it (see
    ``processors.scores``); without it the scores are empty.
    """
    sections = sections_of(state["fields"])
    built = {
        name: build(sections, state["ids"], settings) for name, (_, build) in FIELD_BUILDERS.items()
    }
    return {
        "customer_id": customer_id,
        **built,
        "scores": scores if scores is not None else dict(EMPTY_SCORES),
    }


@dataclass(frozen=True, slots=True)
class Update:
    """A customer's stored state after an update and, rebuilt from the old values, before."""

    after: Sections
    before: Sections
    ids_after: list[str]
    ids_before: list[str]
    written: frozenset[str]

    @property
    def ids_changed(self) -> bool:
        """True when the update added identifiers."""
        return len(self.ids_after) != len(self.ids_before)


def update_of(after: StoredState, old: dict[str, str | None], ids_added: list[str]) -> Update:
    """The before/after view of one update (``old``: hash field → value before, None = absent)."""
    written = frozenset(name[0] for name in old)
    after_sections = sections_of(after["fields"])
    before = {k: dict(v) if k in written else v for k, v in after_sections.items()}
    for name, value in old.items():
        section = before.get(name[0])
        if section is None:
            continue
        if value is None:
            section.pop(name[2:], None)
        else:
            section[name[2:]] = value
    added = set(ids_added)
    ids_before = [key for key in after["ids"] if key not in added]
    return Update(after_sections, before, after["ids"], ids_before, written)


def changed_fields(
    update: Update,
    derived: dict[str, tuple[Any, Any]] | None = None,
    settings: DocumentSettings = DEFAULT_DOCUMENT,
) -> list[dict[str, Any]]:
    """Top-level document fields that differ before and after an update, old and new.

    Only the fields that read a written kind of stored field are built. ``derived`` gives
    (old, new) of fields computed elsewhere, such as model scores.
    """
    changes = []
    for name, (kinds, build) in FIELD_BUILDERS.items():
        touched = update.ids_changed if not kinds else not update.written.isdisjoint(kinds)
        if touched:
            previous = build(update.before, update.ids_before, settings)
            current = build(update.after, update.ids_after, settings)
            if previous != current:
                changes.append({"field": name, "old": previous, "new": current})
    for name, (previous, current) in (derived or {}).items():
        if previous != current:
            changes.append({"field": name, "old": previous, "new": current})
    return changes
