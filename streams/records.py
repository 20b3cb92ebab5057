"""The records both engines hand the pipeline and take back: what was consumed, what to
produce, and how a batch's outputs are delivered."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass


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
    """One record to produce."""

    topic: str
    key: bytes | None
    value: bytes


Deliver = Callable[[Sequence[OutputRecord]], Awaitable[None]]
"""Produce records and return once the broker has confirmed every one."""
