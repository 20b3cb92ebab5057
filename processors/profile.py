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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from portrait.config import LOCAL_CUSTOMER_ID_KEY, Settings
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
    assist_settings,
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
from processors.erasure import LOCAL_HASHER, ErasureHasher
from processors.facts import SourcedFact
from processors.identity import (
    PLAIN_RULES,
    IdentityRules,
    customer_id_for,
    identify,
    normalise_identifier,
)
from processors.intents import intent_fields
from processors.keywords import keyword_fields
from processors.layout import AMOUNT, ATTRIBUTE, COUNT, REJECTED, TAG, WEIGHT
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
    identity: IdentityRules = PLAIN_RULES
    hasher: ErasureHasher = LOCAL_HASHER
    suppression_ms: int = 30 * 86_400_000
    id_key: bytes = LOCAL_CUSTOMER_ID_KEY
    """The customer-id HMAC key (``processors.identity.customer_id_for``)."""


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
    """Person identifier keys (``kind:value``) after the identity rules."""
    new_customer_id: str
    accounts: list[str] = field(default_factory=list)
    """Account numbers: linked to the person, or (no person identifier) applied to."""
    rejected: list[tuple[str, str]] = field(default_factory=list)
    """Identifiers the rules rejected before the state script: (kind, reason)."""
    id_hashes: list[str] = field(default_factory=list)
    """The keyed hash of each identifier (``processors.erasure``), in the same order."""
    suppression_ms: int = 0
    """How long suppression entries last (an erasure's, and those an erased person's
    late event extends)."""
    erase: bool = False
    fields: dict[str, int | float | str] = field(default_factory=dict)
    product_stats: dict[str, int] = field(default_factory=dict)
    call: dict[str, Any] | None = None
    """The call session change (``processors.assist.call_session_delta``)."""
    trend: dict[str, Any] | None = None
    """Group-analysis counts: window start ms ``w``, expiry ms ``exp``, hash fields ``keys``."""
    whole: bool = False
    """Answer every family's view, not only the touched ones: a friend added gets the
    whole profile (``profile.snapshot``) built from the answer."""

    def to_json(self, now_ms: int, retention_ms: int, *, quiet: bool = False) -> bytes:
        """The delta as the state script reads it (its ARGV). ``quiet`` (replay): the
        script answers only the customer id and keeps nothing pending for delivery."""
        body: dict[str, Any] = {
            "eid": self.event_id,
            "ts": self.occurred_ms,
            "now": now_ms,
            "ret": retention_ms,
            "ids": self.identifiers,
            "idh": self.id_hashes,
            "accts": self.accounts,
            "newcid": self.new_customer_id,
            "erase": self.erase,
            "fields": self.fields,
            "stats": self.product_stats,
        }
        if self.suppression_ms:
            body["supttl"] = self.suppression_ms
        if self.call is not None:  # the script's JSON null would read as true
            body["call"] = self.call
        if self.trend is not None:
            body["trend"] = self.trend
        if quiet:
            body["quiet"] = True
        elif self.whole:
            body["whole"] = True
        return orjson.dumps(body)


def delta_settings(settings: Settings) -> DeltaSettings:
    """The settings that shape deltas, from the configuration."""
    return DeltaSettings(
        timezone=ZoneInfo(settings.timezone),
        half_life_days=settings.preference_half_life_days,
        attribute_confidence=settings.attribute_confidence,
        assist=assist_settings(settings),
        link_fact_identities=settings.facts_link_identities,
        problem_intents=settings.problem_intents,
        trends_window_ms=settings.trends_window_seconds * 1000,
        trends_retention_ms=settings.trends_retention_seconds * 1000,
        identity=IdentityRules.load(settings.identity_file, settings.default_region),
        hasher=ErasureHasher(settings.erasure_hash_key()),
        suppression_ms=settings.erasure_suppression_days * 86_400_000,
        id_key=settings.customer_id_hash_key(),
    )


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


@dataclass(slots=True)
class Reading:
    """What the models read in an event's text and images (all optional)."""

    emotion: EmotionResult | None = None
    facts: Sequence[SourcedFact] = ()
    keywords: Sequence[str] = ()
    intent: str | None = None


@dataclass(slots=True)
class Change:
    """One event's delta while the builders fill it in: what they read, what they write."""

    event: InputEvent
    settings: DeltaSettings
    reading: Reading
    product_stats: Mapping[str, Mapping[str, ProductStats]]
    occurred_ms: int
    delta: ProfileDelta
    fields: dict[str, int | float | str]

    @property
    def weight(self) -> float:
        """The event's recency weight (``processors.preferences.decay_weight``)."""
        return decay_weight(self.occurred_ms, self.settings.half_life_days)


# --- what each event type writes --------------------------------------------------------


def _relation(change: Change, event: RelationChanged) -> None:
    payload, ms, eid = event.payload, change.occurred_ms, event.event_id
    change.fields.update(
        action_fields(payload.employee_id, f"{payload.relation}_{payload.action}", ms, eid)
    )
    change.fields.update(
        relation_fields(
            payload.employee_id, payload.relation, payload.action, payload.group_id, ms, eid
        )
    )
    # a friend added gets the whole profile (profile.snapshot), built from the answer
    change.delta.whole = payload.relation == "friend" and payload.action == "added"


def _chat(change: Change, event: ChatMessage) -> None:
    payload = event.payload
    change.fields.update(interaction_fields(payload.employee_id, change.weight, change.occurred_ms))
    if payload.direction == "inbound":
        change.fields.update(
            action_fields(payload.employee_id, "message", change.occurred_ms, event.event_id)
        )


def _call_started(change: Change, event: CallStarted) -> None:
    agent = event.payload.agent_id
    change.fields.update(interaction_fields(agent, change.weight, change.occurred_ms))
    change.fields.update(action_fields(agent, "call", change.occurred_ms, event.event_id))


def _channel_event(change: Change, event: ChannelEvent) -> None:
    payload, fields = event.payload, change.fields
    # behaviour counts and spend feed the customer features (processors/features.py)
    fields[COUNT + "act:" + payload.action] = 1
    if payload.action in HOLDING_ACTIONS:
        fields.update(product_fields(payload.items, "held", change.occurred_ms, event.event_id))
    if payload.amount:
        fields[AMOUNT] = float(payload.amount)
    _roles(change, payload.attributes)
    confidence = change.settings.attribute_confidence
    fields.update(_attribute_registers(payload.attributes, event.source, confidence, False, event))


def _source_imported(change: Change, event: SourceImported) -> None:
    payload, fields = event.payload, change.fields
    for interaction in payload.interactions:
        action = interaction.get("action")
        if isinstance(action, str) and _NAME.fullmatch(action):
            fields[COUNT + "act:" + action] = int(fields.get(COUNT + "act:" + action, 0)) + 1
    _roles(change, payload.attributes)
    default = change.settings.attribute_confidence
    confidence = default if payload.confidence is None else payload.confidence
    fields.update(_attribute_registers(payload.attributes, event.source, confidence, False, event))


def _roles(change: Change, attributes: Mapping[str, Any]) -> None:
    """A role that comes with an account is the person's role on it (not for an
    account-only event: there is no person)."""
    delta = change.delta
    if delta.identifiers:
        change.fields.update(
            role_fields(dict(attributes), delta.accounts, change.occurred_ms, delta.event_id)
        )


def _profile_edited(change: Change, event: ProfileEdited) -> None:
    edits: dict[str, Any] = dict(event.payload.set)
    edits.update({name: None for name in event.payload.unset})
    change.fields.update(_attribute_registers(edits, MANUAL_SOURCE, 1.0, True, event))
    order = order_key(True, change.occurred_ms, event.event_id)
    for tag in event.payload.tags_remove:
        change.fields[TAG + tag] = f"{order}\t0"
    for tag in event.payload.tags_add:
        change.fields[TAG + tag] = f"{order}\t1"


def _feedback(change: Change, event: FeedbackRecorded) -> None:
    feedback = event.payload
    change.delta.product_stats = feedback_counts(feedback.phase, feedback.product, feedback.outcome)
    if feedback.product and feedback.outcome in ("accepted", "declined"):
        status = "held" if feedback.outcome == "accepted" else "declined"
        change.fields.update(
            product_fields([feedback.product], status, change.occurred_ms, event.event_id)
        )


EVENT_BUILDERS: dict[str, Callable[[Change, Any], None]] = {
    "relation.changed": _relation,
    "chat.message": _chat,
    "call.started": _call_started,
    "channel.event": _channel_event,
    "source.imported": _source_imported,
    "profile.edited": _profile_edited,
    "feedback.recorded": _feedback,
}
"""Event type → what that type of event writes (call turns and ends: only the
contributors below)."""


# --- what every event contributes, one concern each --------------------------------------


class NoUsableIdentifier(ValueError):
    """Every identifier of the event was rejected by the identity rules (DLQ)."""


def _rejection_counts(change: Change) -> None:
    """Identifiers the rules rejected, counted per kind and reason in the person's
    ``identity_rejections`` (never the value)."""
    if change.delta.identifiers:
        for kind, reason in change.delta.rejected:
            name = f"{COUNT}{REJECTED}{kind}:{reason}"
            change.fields[name] = int(change.fields.get(name, 0)) + 1


def _counts(change: Change) -> None:
    change.fields[COUNT + "events_total"] = 1
    change.fields[COUNT + "ch:" + change.event.source] = 1


def _emotion(change: Change) -> None:
    emotion = change.reading.emotion
    if emotion is not None:
        settings = change.settings
        change.fields.update(
            emotion_fields(
                emotion, change.occurred_ms, change.event.event_id, settings.half_life_days
            )
        )


def _preferences(change: Change) -> None:
    """Events the customer initiated at that moment shape channel and time preferences."""
    if _counts_as_activity(change.event):
        bucket = time_of_day(change.event.occurred_at, change.settings.timezone)
        change.fields[WEIGHT + "ch:" + change.event.source] = change.weight
        change.fields[WEIGHT + "tod:" + bucket] = change.weight


def _keywords_and_intent(change: Change) -> None:
    keywords, intent = change.reading.keywords, change.reading.intent
    if keywords:
        change.fields.update(keyword_fields(keywords, change.weight))
    change.fields.update(intent_fields(intent))
    if keywords or intent:  # group analysis: counted into the event-time window
        window = change.settings.trends_window_ms
        change.delta.trend = {
            "w": change.occurred_ms - change.occurred_ms % window,
            "exp": change.settings.trends_retention_ms,
            "keys": [f"kw:{term}" for term in keywords] + ([f"in:{intent}"] if intent else []),
        }


def _problems(change: Change) -> None:
    event, ms = change.event, change.occurred_ms
    words = text_to_read(event)
    if words is not None:
        intents = change.settings.problem_intents
        change.fields.update(
            problem_fields(words, change.reading.intent, intents, ms, event.event_id)
        )
    change.fields.update(resolution_fields(event, ms))


def _facts(change: Change) -> None:
    for source, fact in change.reading.facts:
        change.fields.update(
            _attribute_registers(
                {fact.name: fact.value}, source, fact.confidence, False, change.event
            )
        )


def _call_session(change: Change) -> None:
    emotion = change.reading.emotion
    change.delta.call = call_session_delta(
        change.event,
        emotion.label if emotion else None,
        change.product_stats,
        change.settings.assist,
    )


CONTRIBUTORS: tuple[Callable[[Change], None], ...] = (
    _counts,
    _rejection_counts,
    _emotion,
    _preferences,
    _keywords_and_intent,
    _problems,
    _facts,
    _call_session,
)
"""What every applied event contributes, whatever its type (each a no-op when its
concern does not apply)."""


def _identifiers(
    event: InputEvent, facts: Sequence[SourcedFact], settings: DeltaSettings
) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """The event's person identifier keys (with ``link_fact_identities``, also phones
    and e-mails found in its text), account numbers and rejections."""
    rules = settings.identity
    found = identify(event.customer, rules)
    if settings.link_fact_identities:
        for _, fact in facts:
            if fact.name in ("phone", "email"):
                value = normalise_identifier(fact.name, fact.value, rules.region)
                key = f"{fact.name}:{value}"
                if key in found.people:
                    continue
                if rules.is_blocked(fact.name, value.lstrip("+")):
                    found.rejected.append((fact.name, "blocked"))
                else:
                    found.people.append(key)
    return found.people, found.accounts, found.rejected


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
    ``keywords`` and ``intent`` those of the customer's words in it.

    The event type's builder (:data:`EVENT_BUILDERS`) writes what only that type
    writes; every contributor (:data:`CONTRIBUTORS`) adds its concern's part."""
    identifiers, accounts, rejected = _identifiers(event, facts, settings)
    if not identifiers and not accounts:
        raise NoUsableIdentifier("identifiers_rejected")
    occurred_ms = _to_ms(event.occurred_at)
    delta = ProfileDelta(
        event_id=event.event_id,
        occurred_ms=occurred_ms,
        identifiers=identifiers,
        new_customer_id=customer_id_for(identifiers[0], settings.id_key) if identifiers else "",
        accounts=accounts,
        rejected=rejected,
        id_hashes=settings.hasher.many(identifiers),
        suppression_ms=settings.suppression_ms,
    )
    if isinstance(event, CustomerErasure):
        delta.erase = True
        return delta
    change = Change(
        event,
        settings,
        Reading(emotion, facts, keywords, intent),
        product_stats or {},
        occurred_ms,
        delta,
        {},
    )
    builder = EVENT_BUILDERS.get(event.type)
    if builder is not None:
        builder(change, event)
    for contribute in CONTRIBUTORS:  # after the type's own: facts override its attributes
        contribute(change)
    delta.fields = change.fields
    return delta
