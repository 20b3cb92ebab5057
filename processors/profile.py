"""The profile delta: what each input event changes in a customer's stored state.

An event becomes a :class:`ProfileDelta` made only of operations that commute — counters
that add, decayed weights that add, min/max timestamps, last-writer-wins registers
(attributes, tags) and set unions (identifiers). The state script applies a delta and,
with the same operations, merges two customers; so any order of the same events, and any
merge order, leaves the same profile content.

How stored state reads as the profile document is ``processors/document.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

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
)
from processors.attributes import (
    encode_register,
    iso_from_ms,
    normalise_attribute_name,
    normalise_attribute_value,
    order_key,
)
from processors.emotion import EmotionResult, emotion_fields, text_to_read
from processors.facts import SourcedFact
from processors.identity import (
    customer_id_for,
    identifier_keys,
    normalise_identifier,
)
from processors.intents import intent_fields
from processors.keywords import keyword_fields
from processors.layout import ATTRIBUTE, COUNT, TAG, WEIGHT
from processors.preferences import decay_weight, time_of_day
from processors.problems import problem_fields, resolution_fields
from processors.relationships import (
    action_fields,
    interaction_fields,
    relation_fields,
)
from processors.roles import role_fields

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
