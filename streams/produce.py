"""Routing input events to their topics and keys, for ``portrait produce`` and the demo."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from portrait.config import Settings
from portrait.events import INPUT_TOPIC_BY_TYPE, CustomerRef
from processors.identity import identify
from streams.records import OutputRecord


class Unroutable(ValueError):
    """A line whose topic cannot be told from its content."""


def route_key(event: dict[str, Any]) -> str | None:
    """The record key docs/design.md gives each topic (conversation, call, or customer id)."""
    topic = INPUT_TOPIC_BY_TYPE[event["type"]]
    payload = event.get("payload") or {}
    if topic == "chat":
        found = payload.get("conversation_id") or payload.get("employee_id")
        if found:
            return str(found)
    if topic == "calls" and payload.get("call_id"):
        return str(payload["call_id"])
    try:
        found_ids = identify(CustomerRef.model_validate(event.get("customer") or {}))
    except ValueError:
        return None
    if found_ids.people:
        return found_ids.people[0]
    return f"account_no:{found_ids.accounts[0]}" if found_ids.accounts else None


def route(settings: Settings, line: bytes, topic: str | None = None) -> OutputRecord:
    """The record for one JSONL line: by its ``type``, or raw to ``topic`` when given."""
    if topic is not None:
        return OutputRecord(settings.topic(topic), None, line)
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise Unroutable("not JSON") from exc
    if not isinstance(event, dict) or event.get("type") not in INPUT_TOPIC_BY_TYPE:
        raise Unroutable("no input event type")
    key = route_key(event)
    return OutputRecord(
        settings.topic(INPUT_TOPIC_BY_TYPE[event["type"]]),
        key.encode() if key else None,
        line,
    )


def jsonl_lines(lines: Iterable[bytes]) -> Iterator[bytes]:
    """Non-blank lines without their line ending."""
    for line in lines:
        stripped = line.rstrip(b"\r\n")
        if stripped.strip():
            yield stripped


def erasure_event(kind: str, value: str, requested_by: str | None = None) -> bytes:
    """A ``customer.erasure`` command for one identifier (``portrait erase``)."""
    body = {
        "event_id": f"erase-{uuid.uuid4().hex}",
        "type": "customer.erasure",
        "occurred_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "source": "portrait-cli",
        "customer": {kind: value},
        "payload": {"requested_by": requested_by},
    }
    return orjson.dumps(body)
