"""The records both engines hand the pipeline and take back: what was consumed, what to
produce, and how a batch's outputs are delivered."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from portrait.events import CallStarted, ChatMessage, InputEvent
from processors.emotion import EmotionResult
from processors.indicators import Population
from state.store import Contact, ProfileStore


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One consumed Kafka record, as both engines hand it over."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: float | None = None
    """The record's Kafka timestamp: when it reached the broker (prompt latency)."""


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """One record to produce (a null value is a tombstone of a compacted topic)."""

    topic: str
    key: bytes | None
    value: bytes | None


Deliver = Callable[[Sequence[OutputRecord]], Awaitable[None]]
"""Produce records and return once the broker has confirmed every one."""


@dataclass(slots=True)
class BatchOutcome:
    """Outputs of a batch, the (customer, event) pairs to confirm, and counts by outcome."""

    outputs: list[OutputRecord] = field(default_factory=list)
    confirm: list[tuple[str, str]] = field(default_factory=list)
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    contacts: list[Contact] = field(default_factory=list)
    """Calls and chats between agents and customers (each agent's current customer)."""

    def meet(self, event: InputEvent, customer_id: str) -> None:
        """Note a chat or a call started: the agent's current customer."""
        at_ms = int(event.occurred_at.timestamp() * 1000)
        if isinstance(event, ChatMessage):
            payload = event.payload
            self.contacts.append(
                Contact(payload.employee_id, customer_id, at_ms, payload.conversation_id)
            )
        elif isinstance(event, CallStarted):
            started = event.payload
            self.contacts.append(Contact(started.agent_id, customer_id, at_ms, started.call_id))


@dataclass(slots=True)
class Accepted:
    """A decoded event of a chunk with its record and the emotion read in it."""

    record: InputRecord
    event: InputEvent
    emotion: EmotionResult | None
    rejected: Sequence[tuple[str, str]] = ()
    """Identifiers the rules rejected before the state script (kind, reason)."""


Snapshot = tuple[Population, dict[str, int]]
"""What a batch's outputs read besides its own state: the spend population and the product
statistics, read once per batch and the same for its retries (a retry's outputs are then
the first attempt's, byte for byte)."""


async def batch_snapshot(store: ProfileStore) -> Snapshot:
    """The spend population and product statistics a batch's outputs read."""
    stats = await store.product_stats()
    return Population.of(await store.population()), {k: int(v) for k, v in stats.items()}
