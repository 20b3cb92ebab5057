"""Event contracts: every input and output event of docs/design.md as a typed model.

These models are the source of the JSON Schemas in ``schemas/`` (``portrait schemas``
writes them; a test fails when the committed files differ). Input events are validated
against them in one pass with :data:`INPUT_EVENT_ADAPTER`; a failure sends the raw bytes
to the DLQ with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, model_validator

IDENTIFIER_TYPES: tuple[str, ...] = ("customer_id", "account_no", "phone", "im_id", "email")
"""Identifier kinds an event's ``customer`` may carry."""
PERSON_KINDS: tuple[str, ...] = ("customer_id", "phone", "im_id", "email")
"""Kinds that identify a person, in the order that picks the one a new person's id
derives from (docs/design.md "People and accounts")."""
ACCOUNT_KIND = "account_no"
"""The kind that identifies an account several people can share."""

# Control characters separate fields in stored state; no id, name or source may carry one.
NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
EventId = Annotated[str, Field(min_length=1, max_length=128, pattern=NO_CONTROL)]
Identifier = Annotated[str, Field(min_length=1, max_length=256, pattern=NO_CONTROL)]
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=NO_CONTROL)]
# Bounds keep one event's state change small enough for one atomic script.
Attributes = Annotated[dict[str, Any], Field(max_length=200)]
Names = Annotated[list[Name], Field(max_length=100)]
IdentifierValues = Identifier | Annotated[list[Identifier], Field(max_length=32)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class CustomerRef(_Model):
    """Identifiers known for the customer; at least one must be present."""

    customer_id: IdentifierValues | None = None
    phone: IdentifierValues | None = None
    account_no: IdentifierValues | None = None
    im_id: IdentifierValues | None = None
    email: IdentifierValues | None = None

    @model_validator(mode="after")
    def _has_identifier(self) -> CustomerRef:
        if not any(getattr(self, kind) for kind in IDENTIFIER_TYPES):
            raise ValueError("no customer identifier")
        return self

    def pairs(self) -> list[tuple[str, str]]:
        """Every (kind, raw value) pair, in :data:`IDENTIFIER_TYPES` order."""
        out: list[tuple[str, str]] = []
        for kind in IDENTIFIER_TYPES:
            values = getattr(self, kind)
            if values is None:
                continue
            for value in [values] if isinstance(values, str) else values:
                out.append((kind, value))
        return out


class Prosody(_Model):
    pitch_hz: float | None = None
    pitch_var: float | None = None
    energy_db: float | None = None
    speech_rate: float | None = None


# --- payloads -------------------------------------------------------------------------


class ChatMessagePayload(_Model):
    conversation_id: Identifier
    direction: Literal["inbound", "outbound"]
    employee_id: Identifier
    text: str | None = None
    images: Annotated[list[str], Field(max_length=20)] = Field(default_factory=list)
    group_id: str | None = None


class RelationChangedPayload(_Model):
    employee_id: Identifier
    relation: Literal["friend", "group"]
    action: Literal["added", "removed"]
    group_id: str | None = None


class CallStartedPayload(_Model):
    call_id: Identifier
    agent_id: Identifier


class CallSegmentPayload(_Model):
    call_id: Identifier
    seq: Annotated[int, Field(ge=0)]
    speaker: Literal["customer", "agent"]
    text: str
    offset_ms: Annotated[int, Field(ge=0)] | None = None
    prosody: Prosody | None = None


class CallEndedPayload(_Model):
    call_id: Identifier
    outcome: str | None = None


class ChannelEventPayload(_Model):
    action: Name
    amount: float | None = None
    items: Annotated[list[Any], Field(max_length=1000)] = Field(default_factory=list)
    text: str | None = None
    attributes: Attributes = Field(default_factory=dict)


class ProfileEditedPayload(_Model):
    editor_id: Identifier
    set: Attributes = Field(default_factory=dict)
    unset: Annotated[list[str], Field(max_length=200)] = Field(default_factory=list)
    tags_add: Names = Field(default_factory=list)
    tags_remove: Names = Field(default_factory=list)


class FeedbackRecordedPayload(_Model):
    call_id: str | None = None
    conversation_id: str | None = None
    product: Name | None = None
    phase: Name | None = None
    outcome: Literal["accepted", "declined"] | None = None
    satisfaction: Annotated[int, Field(ge=1, le=5)] | None = None
    prompt_id: str | None = None


class CustomerErasurePayload(_Model):
    requested_by: str | None = None
    reason: str | None = None


class SourceImportedPayload(_Model):
    attributes: Attributes = Field(default_factory=dict)
    interactions: Annotated[list[dict[str, Any]], Field(max_length=1000)] = Field(
        default_factory=list
    )
    confidence: Annotated[float, Field(ge=0, le=1)] | None = None


# --- input envelopes ------------------------------------------------------------------


class InputEvent(_Model):
    """What every input event has; each type (:data:`INPUT_TYPES`) adds its ``type``
    and its ``payload``."""

    event_id: EventId
    occurred_at: AwareDatetime
    source: Name
    customer: CustomerRef
    type: str
    payload: Any


class ChatMessage(InputEvent):
    type: Literal["chat.message"]
    payload: ChatMessagePayload


class RelationChanged(InputEvent):
    type: Literal["relation.changed"]
    payload: RelationChangedPayload


class CallStarted(InputEvent):
    type: Literal["call.started"]
    payload: CallStartedPayload


class CallSegment(InputEvent):
    type: Literal["call.segment"]
    payload: CallSegmentPayload


class CallEnded(InputEvent):
    type: Literal["call.ended"]
    payload: CallEndedPayload


class ChannelEvent(InputEvent):
    type: Literal["channel.event"]
    payload: ChannelEventPayload


class ProfileEdited(InputEvent):
    type: Literal["profile.edited"]
    payload: ProfileEditedPayload


class FeedbackRecorded(InputEvent):
    type: Literal["feedback.recorded"]
    payload: FeedbackRecordedPayload


class CustomerErasure(InputEvent):
    type: Literal["customer.erasure"]
    payload: CustomerErasurePayload = Field(default_factory=CustomerErasurePayload)


class SourceImported(InputEvent):
    type: Literal["source.imported"]
    payload: SourceImportedPayload


@dataclass(frozen=True, slots=True)
class EventType:
    """One event type of a topic: its model (the JSON Schema is made from it) and the
    topic it travels on (short name, without the prefix)."""

    model: type[BaseModel]
    topic: str


INPUT_TYPES: dict[str, EventType] = {
    "chat.message": EventType(ChatMessage, "chat"),
    "relation.changed": EventType(RelationChanged, "chat"),
    "call.started": EventType(CallStarted, "calls"),
    "call.segment": EventType(CallSegment, "calls"),
    "call.ended": EventType(CallEnded, "calls"),
    "channel.event": EventType(ChannelEvent, "channel-events"),
    "profile.edited": EventType(ProfileEdited, "commands"),
    "feedback.recorded": EventType(FeedbackRecorded, "commands"),
    "customer.erasure": EventType(CustomerErasure, "commands"),
    "source.imported": EventType(SourceImported, "commands"),
}
"""Every input event type: the one place to add one (its model above, and what it writes
to state in ``processors/profile.py`` ``EVENT_BUILDERS``; then ``make schemas``). The
validator, the routing of ``portrait produce``, the lanes and the schemas follow from it;
a test checks they agree."""

INPUT_TOPIC_BY_TYPE: dict[str, str] = {name: kind.topic for name, kind in INPUT_TYPES.items()}
"""Short topic name (without prefix) for each input event type."""
INPUT_MODELS: dict[str, type[BaseModel]] = {name: kind.model for name, kind in INPUT_TYPES.items()}
INPUT_EVENT_ADAPTER: TypeAdapter[InputEvent] = TypeAdapter(
    Annotated[  # type: ignore[arg-type]  # a union made from the registry
        Union[tuple(kind.model for kind in INPUT_TYPES.values())],  # noqa: UP007
        Field(discriminator="type"),
    ]
)
"""Validates any input event into its type's model, chosen by ``type``."""


# --- profile document -----------------------------------------------------------------


class AttributeValue(_Model):
    value: Any
    source: str
    confidence: float
    updated_at: str


class Stats(_Model):
    events_total: int
    by_channel: dict[str, int]
    first_seen: str | None
    last_seen: str | None


class Preferences(_Model):
    channel: str | None
    time_of_day: Literal["morning", "noon", "afternoon", "evening", "night"] | None


class Emotion(_Model):
    last: Literal["positive", "neutral", "negative"] | None
    average: float | None
    negative_streak: int


class Keyword(_Model):
    term: str
    weight: float


class Indicators(_Model):
    activity: float | None
    credit: float | None
    wealth: float | None
    campaign_participation: float | None
    influence: float | None


class Scores(_Model):
    value: float | None
    loyalty: float | None
    churn_risk: float | None
    priority: Literal["low", "normal", "high", "urgent"] | None
    model_version: str | None


class Relationship(_Model):
    employee_id: str
    closeness: float


class ProductHolding(_Model):
    """A product the customer holds (bought, or accepted an offer) or declined."""

    product: str
    status: Literal["held", "declined"]


class Need(_Model):
    need: str
    reason: str


class EmployeeAction(_Model):
    employee_id: str
    action: str
    occurred_at: str


class RoleOnAccount(_Model):
    account_no: str
    role: str
    permissions: list[str]


class Identifiers(_Model):
    """Person identifiers (phones in E.164); accounts are in ``accounts``."""

    phone: list[str]
    im_id: list[str]
    email: list[str]
    customer_id: list[str] = Field(default_factory=list)


class AccountStats(_Model):
    events_total: int
    by_channel: dict[str, int]
    first_seen: str | None
    last_seen: str | None


class HeldAccount(_Model):
    """An account the person holds, with their role on it and the account's own data."""

    account_no: str
    role: str | None
    permissions: list[str]
    stats: AccountStats
    indicators: Indicators
    version: int


class IdentityRejection(_Model):
    """An identifier the identity rules refused (never its value)."""

    kind: str
    reason: Literal["blocked", "limit", "conflict"]
    count: int


class AccountPerson(_Model):
    customer_id: str
    role: str | None


class AccountDocument(_Model):
    """An account: what ``portrait account get --json`` prints."""

    account_no: str
    people: list[AccountPerson]
    stats: AccountStats
    indicators: Indicators
    behaviour: dict[str, int] = Field(description="events per action on the account")
    attributes: dict[str, AttributeValue] = Field(default_factory=dict)
    version: int


class Resolution(_Model):
    at: str
    event_id: str
    type: str
    outcome: str | None = None
    satisfaction: int | None = None


class PastProblem(_Model):
    at: str
    intent: str
    text: str
    event_id: str
    resolution: Resolution | None = None


class ProfileDocument(_Model):
    """The profile: what ``portrait profile get --json`` prints and ``profile.changed`` carries."""

    customer_id: str
    version: int
    identifiers: Identifiers
    attributes: dict[str, AttributeValue]
    tags: list[str]
    stats: Stats
    preferences: Preferences
    emotion: Emotion
    keywords: list[Keyword]
    indicators: Indicators
    scores: Scores
    relationships: list[Relationship]
    needs: list[Need]
    roles: list[RoleOnAccount] = Field(default_factory=list)
    accounts: list[HeldAccount] = Field(default_factory=list)
    identity_rejections: list[IdentityRejection] = Field(default_factory=list)
    actions: list[EmployeeAction] = Field(default_factory=list)
    products: list[ProductHolding] = Field(default_factory=list)
    intents: dict[str, int] = Field(
        default_factory=dict, description="messages per intent, most frequent first"
    )
    problems: list[PastProblem] = Field(
        default_factory=list, description="recent problems, newest first, with resolutions"
    )


# --- output events --------------------------------------------------------------------


class _Output(_Model):
    event_id: str
    source_event_id: str
    customer_id: str
    emitted_at: str


class FieldChange(_Model):
    field: str
    old: Any
    new: Any


class ProfileChanged(_Output):
    """The top-level profile fields an input changed, each with its old and new value."""

    type: Literal["profile.changed"]
    version: int
    notify: list[str]
    changed: list[FieldChange]


class AccountChanged(_Model):
    """The account fields an input changed (key: the account number); ``notify`` = the
    employees connected to any of its people."""

    type: Literal["account.changed"]
    event_id: str
    source_event_id: str
    account_no: str
    customer_id: str | None = Field(
        default=None, description="the person whose event changed it, if any"
    )
    emitted_at: str
    version: int
    notify: list[str]
    changed: list[FieldChange]


class ProfileMerged(_Output):
    """``customer_id`` is the survivor; ``merged_id`` the customer that now redirects to it."""

    type: Literal["profile.merged"]
    merged_id: str
    version: int
    notify: list[str]


class ProfileErased(_Output):
    type: Literal["profile.erased"]
    version: int
    notify: list[str]


class ProfileSnapshot(_Output):
    type: Literal["profile.snapshot"]
    version: int
    notify: list[str]
    employee_id: str
    profile: ProfileDocument


class AgentPrompt(_Output):
    type: Literal["agent.prompt"]
    prompt_id: str
    agent_id: str
    call_id: str | None = None
    conversation_id: str | None = None
    kind: Literal["recommend_product", "introduce_or_answer", "soothe_and_close", "escalate"]
    emotion: Literal["positive", "neutral", "negative"]
    phase: str | None
    product: str | None = None
    text: str
    reasons: list[str]
    latency_ms: float


class TrendTerm(_Model):
    term: str
    count: int


class TrendsWindow(_Model):
    type: Literal["trends.window"]
    event_id: str
    emitted_at: str
    window_start: str
    window_end: str
    terms: list[TrendTerm]
    window_seconds: int | None = None
    messages: int = 0
    intents: dict[str, int] = Field(default_factory=dict)


class DlqRecord(_Model):
    """A rejected input: the original bytes (base64) and where they came from."""

    type: Literal["dlq.record"]
    event_id: str
    reason: str
    topic: str
    partition: int
    offset: int
    key_b64: str | None
    value_b64: str
    rejected_at: str


OUTPUT_TYPES: dict[str, EventType] = {
    "profile.changed": EventType(ProfileChanged, "profile-changes"),
    "profile.merged": EventType(ProfileMerged, "profile-changes"),
    "profile.erased": EventType(ProfileErased, "profile-changes"),
    "profile.snapshot": EventType(ProfileSnapshot, "profile-changes"),
    "account.changed": EventType(AccountChanged, "profile-changes"),
    "agent.prompt": EventType(AgentPrompt, "agent-prompts"),
    "trends.window": EventType(TrendsWindow, "trends"),
    "dlq.record": EventType(DlqRecord, "dlq"),
}
"""Every output event type: the one place to add one (with its builder in
``processors/outputs.py``, and ``make schemas``); the worker routes each by its topic
here."""
OUTPUT_MODELS: dict[str, type[BaseModel]] = {
    name: kind.model for name, kind in OUTPUT_TYPES.items()
}
OUTPUT_TOPIC_BY_TYPE: dict[str, str] = {name: kind.topic for name, kind in OUTPUT_TYPES.items()}
