"""The records an applied event goes out as: profile events, a snapshot for a new
friend, an agent prompt; and DLQ records for what was rejected.

The pipeline hands each applied event here with its before/after view and scores;
``processors/outputs.py`` builds every event through the typed models, and this module
addresses them to their topics, words prompts and counts them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from portrait import metrics
from portrait.config import Settings
from portrait.events import OUTPUT_TYPES, InputEvent, RelationChanged
from processors.accounts import people_document
from processors.assist import AssistSettings, PromptTemplates, assist_settings
from processors.attributes import iso_from_ms
from processors.document import (
    DocumentSettings,
    Update,
    account_changes,
    changed_fields,
    document_from_state,
    empty_fields,
    is_new,
    update_of,
)
from processors.emotion import EmotionResult, negative_streak
from processors.envelope import Rejection
from processors.layout import ROLE, VERSION, Sections
from processors.outputs import (
    OutputOrigin,
    account_changed,
    agent_prompt,
    dlq_record,
    encode,
    encode_profile_changed,
    plan_prompt,
    profile_erased,
    profile_merged,
    profile_snapshot,
)
from processors.relationships import became_friend, connected_employees
from state.answers import (
    AccountsApplied,
    Applied,
    ApplyResult,
    Erased,
    Suppressed,
)
from streams.records import InputRecord, OutputRecord

log = logging.getLogger("portrait.pipeline")

Scores = dict[str, object]


def now_iso() -> str:
    """This moment as an RFC 3339 UTC timestamp."""
    return iso_from_ms(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class AppliedEvent:
    """An input the store applied (or answered as a redelivery), with what the outputs
    are built from."""

    record: InputRecord
    event: InputEvent
    emotion: EmotionResult | None
    result: Applied
    update: Update
    scores: tuple[Scores, Scores]


def has_outputs(result: ApplyResult, emit: bool) -> bool:
    """Whether a first application has outputs to build (none when replaying quietly)."""
    if isinstance(result, Suppressed):
        return emit and bool(result.erased)
    if isinstance(result, Erased | AccountsApplied):
        return emit
    return isinstance(result, Applied) and result.state is not None


def count_rejections(rejected: Sequence[tuple[str, str]]) -> None:
    """Identifiers the identity rules refused, counted by kind and reason."""
    for kind, reason in rejected:
        metrics.IDENTITY_REJECTIONS.labels(kind, reason).inc()


class Outputs:
    """Addresses, words and counts the outputs of a batch's events."""

    def __init__(
        self,
        settings: Settings,
        document: DocumentSettings,
        templates: PromptTemplates,
        assist: AssistSettings | None = None,
    ) -> None:
        self.document = document
        self.templates = templates
        self.assist = assist or assist_settings(settings)
        # each output type's topic, from the registry (portrait.events.OUTPUT_TYPES)
        self.topic = {name: settings.topic(kind.topic) for name, kind in OUTPUT_TYPES.items()}
        # document fields built in this batch, per customer: (version, field → value)
        self._built: dict[str, tuple[int, dict[str, object]]] = {}
        self._built_for: DocumentSettings | None = None
        self._empty: dict[str, object] = {}  # the fields of the empty document, per batch

    def _fields_changed(
        self, done: AppliedEvent, customer_id: str, again: bool
    ) -> list[dict[str, object]]:
        """The change's fields, old and new, each built once: a new customer changes from
        the empty document (built once per batch), and when the same customer has
        another update later in the chunk (``again``) the fields built here are kept for
        it — its state before is this one's state after when the versions follow. Not
        for a person holding accounts (an account can change through others' events
        between two of the person's), and only within one batch (its document settings:
        the spend population is read per batch). Every update takes its customer's kept
        fields out, so what a loser or an erased person left is never found: an id that
        comes back starts new (the empty document) and keeps its own from there."""
        update = done.update
        if self._built_for is not self.document:
            self._built, self._built_for = {}, self.document
            self._empty = empty_fields(self.document)
        derived = {"scores": done.scores}
        previous = self._built.pop(customer_id, None)
        holds = bool(update.accounts_after or update.accounts_before)
        before = int(update.before.meta.get("version", 0))
        known: dict[str, object] | None = None
        if is_new(update):  # a new customer changes from the empty document
            known = self._empty
        elif previous is not None and previous[0] == before and not holds:
            known = previous[1]
        built: dict[str, object] | None = {} if again and not holds else None
        changes = changed_fields(update, derived, self.document, known, built)
        if built is not None:
            version = int(update.after.meta.get("version", 0))
            self._built[customer_id] = (version, {**known, **built} if known else built)
        return changes

    def applied(
        self, done: AppliedEvent, emitted_at: str, again: bool = False
    ) -> list[OutputRecord]:
        """Every output of an applied event: merges, the change, the agent prompt it
        calls for, and the whole profile for an employee who just became a friend. A
        redelivery whose outputs were never confirmed gets all of them again (the same
        ids: the state script kept its answer pending). ``again``: the customer has
        another update later in this chunk."""
        result, update = done.result, done.update
        applied = OutputOrigin(
            done.event.event_id,
            result.customer_id,
            int(update.after.meta.get("version", 0)),
            connected_employees(update.after.registers),
            emitted_at,
        )
        key = applied.customer_id.encode()
        out = [self._record(key, profile_merged(applied, loser)) for loser in result.merged]
        changes = self._fields_changed(done, applied.customer_id, again)
        out.append(
            OutputRecord(
                self.topic["profile.changed"], key, encode_profile_changed(applied, changes)
            )
        )
        out.extend(self._links(done, emitted_at))
        prompt = self._prompt(done)
        if prompt is not None:
            out.append(prompt)
        event = done.event
        if isinstance(event, RelationChanged):
            employee = event.payload.employee_id
            if became_friend(employee, update.before.registers, update.after.registers):
                assert result.state is not None
                state = result.state
                document = document_from_state(
                    applied.customer_id,
                    state,
                    dict(done.scores[1]),
                    self.document,
                    result.accounts,
                )
                snapshot = profile_snapshot(applied, employee, document)
                out.append(self._record(key, snapshot))
        return out

    def _links(self, done: AppliedEvent, emitted_at: str) -> list[OutputRecord]:
        """``account.changed`` for each account whose people or roles the event changed
        (a new link, or a new role on it)."""
        result = done.result
        person = result.customer_id
        out = []
        for number, account in sorted(result.accounts.items()):
            if not account.people:  # not named by the event: its people are unchanged
                continue
            role_field = ROLE + number
            before = dict(account.people)
            if number in result.links_added:
                before.pop(person, None)
            elif role_field in result.old:
                previous = result.old[role_field]
                before[person] = previous or ""
            people = (people_document(before), people_document(account.people))
            changes = account_changes(None, Sections(), people, self.document)
            if changes:
                version = int(account.fields.get(VERSION, 0))
                body = account_changed(
                    done.event.event_id,
                    number,
                    person,
                    version,
                    account.notify,
                    changes,
                    emitted_at,
                )
                out.append(self._record(number.encode(), body))
        return out

    def unscored(
        self, event_id: str, result: ApplyResult, emitted_at: str
    ) -> tuple[list[OutputRecord], list[tuple[str, str]]]:
        """Outputs and confirmations of an erasure (its notices; the erasure's record
        forgets the erased ids once they are out), a suppressed event that erased the
        erased person's leftovers, or an account-only event."""
        if isinstance(result, AccountsApplied):
            confirm = [(a.customer_id, event_id) for a in result.accounts]
            return self.accounts_applied(event_id, result, emitted_at), confirm
        if isinstance(result, Erased | Suppressed):
            confirm = [("", event_id)] if isinstance(result, Erased) else []
            return self.erased(event_id, result.erased, emitted_at), confirm
        return [], []

    def accounts_applied(
        self, event_id: str, result: AccountsApplied, emitted_at: str
    ) -> list[OutputRecord]:
        """``account.changed`` for each account an account-only event applied to."""
        out = []
        for applied in result.accounts:
            assert applied.state is not None and applied.account_no is not None
            update = update_of(applied.state, applied.old, [])
            changes = account_changes(update.before, update.after, None, self.document)
            body = account_changed(
                event_id,
                applied.account_no,
                None,
                int(update.after.meta.get("version", 0)),
                applied.notify,
                changes,
                emitted_at,
            )
            key = applied.account_no.encode()
            out.append(self._record(key, body))
        return out

    def _prompt(self, done: AppliedEvent) -> OutputRecord | None:
        """The agent prompt an applied event calls for, if any."""
        emotion = done.emotion
        if emotion is None:
            return None
        value = done.scores[1].get("value")
        plan = plan_prompt(
            done.event,
            emotion.label,
            done.result.prompt,
            negative_streak(done.update.after.negatives),
            value if isinstance(value, float) else None,
            self.assist,
        )
        if plan is None:
            return None
        now_ms = time.time() * 1000
        arrived = done.record.timestamp_ms
        latency_ms = max(now_ms - arrived, 0.0) if arrived else 0.0
        metrics.PROMPTS.labels(plan.channel, plan.kind).inc()
        metrics.PROMPT_LATENCY.observe(latency_ms / 1000)
        text = self.templates.render(
            plan.channel, plan.kind, plan.language, plan.product, plan.rate
        )
        prompt = agent_prompt(
            plan,
            done.event.event_id,
            done.result.customer_id,
            emotion.label,
            text,
            latency_ms,
            iso_from_ms(now_ms),
        )
        return self._record(plan.agent_id.encode(), prompt)

    def erased(
        self, source_event_id: str, customers: Sequence[str], emitted_at: str
    ) -> list[OutputRecord]:
        """``profile.erased`` for each customer an erasure removed."""
        return [
            self._record(cid.encode(), profile_erased(source_event_id, cid, emitted_at))
            for cid in customers
        ]

    def _record(self, key: bytes | None, body: Any) -> OutputRecord:
        """An output on the topic its type goes to."""
        return OutputRecord(self.topic[body.type], key, encode(body))

    def rejected(self, record: InputRecord, rejection: Rejection) -> OutputRecord:
        """The DLQ record of a rejected input, counted and logged (no values)."""
        metrics.DLQ.labels(rejection.code).inc()
        log.warning(
            "rejected input",
            extra={"topic": record.topic, "partition": record.partition, "reason": rejection.code},
        )
        return self._dlq(record, rejection)

    def _dlq(self, record: InputRecord, rejection: Rejection) -> OutputRecord:
        body = dlq_record(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            rejection.reason,
            now_iso(),
        )
        return self._record(record.key, body)

    def images_rejected(
        self, record: InputRecord, errors: Sequence[tuple[int, str]]
    ) -> OutputRecord:
        """One DLQ record for a message's unreadable images (the message still applies)."""
        codes = sorted({code for _, code in errors})
        where = ", ".join(f"image {index} {code}" for index, code in errors)
        for _, code in errors:
            metrics.DLQ.labels(code).inc()
        log.warning(
            "unreadable image",
            extra={"topic": record.topic, "partition": record.partition, "reason": codes[0]},
        )
        return self._dlq(record, Rejection(f"{codes[0]}: {where}"))
