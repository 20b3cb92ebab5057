"""Every output event, built through the typed models that generate its JSON Schema.

Owns the shape of what Portrait emits: ``profile.changed``, ``profile.merged``,
``profile.erased``, ``profile.snapshot``, ``agent.prompt`` and ``dlq.record``
(``trends.window`` is built by ``streams/trends.py`` from the same models). Building
through :mod:`portrait.events` means an output that drifts from its schema fails here,
in the pipeline's tests, instead of in a subscriber. Ids are deterministic, so an output
re-emitted after a crash carries the same id.

It also decides which prompt an applied event calls for (:func:`plan_prompt`, docs/design.md
"Agent prompt"): the call advice the state script answered, or the chat emotion response.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from portrait.events import (
    AccountChanged,
    AgentPrompt,
    CallSegment,
    ChatMessage,
    DlqRecord,
    FieldChange,
    InputEvent,
    ProfileChanged,
    ProfileDocument,
    ProfileErased,
    ProfileMerged,
    ProfileSnapshot,
)
from processors.assist import (
    AssistSettings,
    CallAdvice,
    chat_response,
    language_of,
    prompt_id,
    prompt_reasons,
)

Output = (
    AccountChanged
    | ProfileChanged
    | ProfileMerged
    | ProfileErased
    | ProfileSnapshot
    | AgentPrompt
    | DlqRecord
)


def output_event_id(kind: str, source_event_id: str, customer_id: str) -> str:
    """Deterministic id of an output, so a re-emitted output carries the same id."""
    digest = hashlib.sha256(f"{kind}|{source_event_id}|{customer_id}".encode()).hexdigest()
    return digest[:32]


EMISSION_FIELDS = {"event_id", "emitted_at", "latency_ms"}
"""What describes an emission, not its content: left out of the content an id names."""
EMISSION_ORDER = ("emitted_at", "latency_ms")
"""The emission's fields after ``event_id``, in the order :func:`encode` writes them."""


def encode(output: Output) -> bytes:
    """An output as the JSON its topic carries (fields never set are left out, so a call
    prompt has no ``conversation_id`` and a chat prompt no ``call_id``).

    Its ``event_id`` names its content: the kind, source and customer's id
    (:func:`output_event_id`) with a digest of every other field but the emission's
    time. A re-emission after a redelivery carries the same content, so the same id; a
    change rebuilt on state that Redis lost and got again in another order (its
    ``version`` or old values differ) is another change, with another id — never one id
    with two contents."""
    if not hasattr(output, "event_id"):
        return output.model_dump_json(exclude_unset=True).encode()
    content = output.model_dump_json(exclude_unset=True, exclude=EMISSION_FIELDS).encode()
    emission = {n: getattr(output, n) for n in EMISSION_ORDER if n in output.model_fields_set}
    return _stamped(output.event_id, content, emission)


def _stamped(named: str, content: bytes, emission: dict[str, Any]) -> bytes:
    """An output's JSON from its content (dumped once, without the emission's fields):
    its ``event_id`` (``named`` and a digest of the content), the emission's fields, then
    the content (a second dump of the whole output cost as much as the first: a busy
    customer's change carries two 50-item action lists)."""
    digest = hashlib.sha256(named.encode() + b"|" + content).hexdigest()[:32]
    head = orjson.dumps({"event_id": digest, **emission})
    return head if content == b"{}" else head[:-1] + b"," + content[1:]


@dataclass(frozen=True, slots=True)
class OutputOrigin:
    """What every profile output of one applied input shares."""

    source_event_id: str
    customer_id: str
    version: int
    notify: list[str]
    emitted_at: str

    def fields(self, kind: str, named: str | None = None) -> dict[str, Any]:
        """The fields every profile output of this input carries, for output ``kind``
        (its id derived from the customer ``named``, by default the one applied to)."""
        return {
            "type": kind,
            "event_id": output_event_id(kind, self.source_event_id, named or self.customer_id),
            "source_event_id": self.source_event_id,
            "customer_id": self.customer_id,
            "version": self.version,
            "notify": self.notify,
            "emitted_at": self.emitted_at,
        }


def profile_changed(applied: OutputOrigin, changes: Sequence[dict[str, Any]]) -> ProfileChanged:
    """The top-level fields an input changed, old and new."""
    changed = [FieldChange(**change) for change in changes]
    return ProfileChanged(**applied.fields("profile.changed"), changed=changed)


def encode_profile_changed(applied: OutputOrigin, changes: Sequence[dict[str, Any]]) -> bytes:
    """``encode(profile_changed(applied, changes))``, byte for byte, without building the
    typed model: one per applied event, it cost the worker more than any other output
    (``tests/processors/test_outputs.py`` holds the two to the same bytes). ``changes``
    as :func:`processors.document.changed_fields` gives them (field, old, new)."""
    fields = applied.fields("profile.changed")
    content = orjson.dumps(
        {
            "source_event_id": fields["source_event_id"],
            "customer_id": fields["customer_id"],
            "type": fields["type"],
            "version": fields["version"],
            "notify": fields["notify"],
            "changed": changes,
        },
        option=orjson.OPT_NON_STR_KEYS,
    )
    return _stamped(fields["event_id"], content, {"emitted_at": fields["emitted_at"]})


def account_changed(
    source_event_id: str,
    account_no: str,
    customer_id: str | None,
    version: int,
    notify: Sequence[str],
    changes: Sequence[dict[str, Any]],
    emitted_at: str,
) -> AccountChanged:
    """The account fields an input changed (its stats for an account-only event, its
    people and roles for a link); ``customer_id``: the person whose event it was."""
    return AccountChanged(
        type="account.changed",
        event_id=output_event_id("account.changed", source_event_id, "acct:" + account_no),
        source_event_id=source_event_id,
        account_no=account_no,
        customer_id=customer_id,
        emitted_at=emitted_at,
        version=version,
        notify=list(notify),
        changed=[FieldChange(**change) for change in changes],
    )


def profile_merged(applied: OutputOrigin, merged_id: str) -> ProfileMerged:
    """``merged_id`` now redirects to the survivor ``applied.customer_id``."""
    return ProfileMerged(**applied.fields("profile.merged", merged_id), merged_id=merged_id)


def profile_snapshot(
    applied: OutputOrigin, employee_id: str, document: dict[str, Any]
) -> ProfileSnapshot:
    """The whole profile for an employee who just added the customer as a friend."""
    return ProfileSnapshot(
        **applied.fields("profile.snapshot") | {"notify": [employee_id]},
        employee_id=employee_id,
        profile=ProfileDocument.model_validate(document),
    )


def profile_erased(source_event_id: str, customer_id: str, emitted_at: str) -> ProfileErased:
    """A customer removed by ``customer.erasure``."""
    return ProfileErased(
        type="profile.erased",
        event_id=output_event_id("profile.erased", source_event_id, customer_id),
        source_event_id=source_event_id,
        customer_id=customer_id,
        version=0,
        notify=[],
        emitted_at=emitted_at,
    )


def dlq_record(
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    reason: str,
    rejected_at: str,
) -> DlqRecord:
    """A rejected input: its original bytes, where they came from, and why."""
    where = f"{topic}|{partition}|{offset}"
    return DlqRecord(
        type="dlq.record",
        event_id=hashlib.sha256(where.encode()).hexdigest()[:32],
        reason=reason,
        topic=topic,
        partition=partition,
        offset=offset,
        key_b64=base64.b64encode(key).decode() if key is not None else None,
        value_b64=base64.b64encode(value or b"").decode(),
        rejected_at=rejected_at,
    )


@dataclass(frozen=True, slots=True)
class PromptPlan:
    """The prompt an applied event calls for, before its wording."""

    channel: str  # "call" or "chat"
    kind: str
    agent_id: str
    where: dict[str, str]  # {"call_id": …} or {"conversation_id": …}
    phase: str | None
    product: str | None
    reasons: list[str]
    language: str
    rate: float | None


def plan_prompt(
    event: InputEvent,
    emotion: str | None,
    advice: CallAdvice | None,
    negative_streak: int,
    value: float | None,
    settings: AssistSettings,
) -> PromptPlan | None:
    """A customer call turn whose advice changed gets the call prompt; an inbound chat
    message the emotion response (``processors.assist.chat_response``); else None."""
    if emotion is None:
        return None
    if isinstance(event, CallSegment) and advice is not None:
        return PromptPlan(
            "call",
            advice.kind,
            advice.agent_id or "unassigned",
            {"call_id": event.payload.call_id},
            advice.phase,
            advice.product,
            prompt_reasons(advice, emotion),
            language_of(event.payload.text),
            advice.rate,
        )
    if isinstance(event, ChatMessage) and event.payload.direction == "inbound":
        response = chat_response(emotion, negative_streak, value, settings)
        if response is None:
            return None
        kind, reasons = response
        return PromptPlan(
            "chat",
            kind,
            event.payload.employee_id,
            {"conversation_id": event.payload.conversation_id},
            None,
            None,
            reasons,
            language_of(event.payload.text),
            None,
        )
    return None


def agent_prompt(
    plan: PromptPlan,
    source_event_id: str,
    customer_id: str,
    emotion: str,
    text: str,
    latency_ms: float,
    emitted_at: str,
) -> AgentPrompt:
    """The ``agent.prompt`` of a plan, worded (``text``) in the customer's language."""
    return AgentPrompt(
        type="agent.prompt",
        event_id=output_event_id("agent.prompt", source_event_id, customer_id),
        source_event_id=source_event_id,
        customer_id=customer_id,
        emitted_at=emitted_at,
        prompt_id=prompt_id(source_event_id, plan.agent_id),
        agent_id=plan.agent_id,
        kind=plan.kind,  # type: ignore[arg-type]
        emotion=emotion,  # type: ignore[arg-type]
        phase=plan.phase,
        product=plan.product,
        text=text,
        reasons=plan.reasons,
        latency_ms=round(latency_ms, 1),
        **plan.where,
    )
