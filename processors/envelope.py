"""Decoding and validation of raw input records.

Owns the boundary between bytes on a topic and typed events: size limit, UTF-8, JSON,
envelope and payload validation. Anything that fails becomes a :class:`Rejection` with a
reason that names the failing fields but never their values (the DLQ keeps the bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from portrait.events import INPUT_EVENT_ADAPTER, InputEvent


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a record could not be accepted; ``reason`` starts with a stable code."""

    reason: str

    @property
    def code(self) -> str:
        """The stable part of the reason (``invalid_json``, ``invalid_event`` …)."""
        return self.reason.split(":", 1)[0]


def describe_validation_error(error: ValidationError, limit: int = 5) -> str:
    """Summarise a validation error by field location and error type, without input values."""
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:limit]:
        location = ".".join(str(p) for p in item["loc"]) or "event"
        parts.append(f"{location}: {item['type']}")
    return "; ".join(parts)


def decode_event(raw: bytes | None, max_bytes: int) -> InputEvent | Rejection:
    """Turn one record's value into a validated input event, or say why not."""
    if raw is None:
        return Rejection("empty: record has no value")
    if len(raw) > max_bytes:
        return Rejection(f"too_large: {len(raw)} bytes > limit {max_bytes}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(f"invalid_utf8: byte {exc.start}")
    try:
        return INPUT_EVENT_ADAPTER.validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_input=False)
        if errors and errors[0]["type"] == "json_invalid":
            return Rejection("invalid_json: not a JSON document")
        if errors and errors[0]["type"] == "union_tag_invalid":
            return Rejection("unknown_type: type is not an input event type")
        if errors and errors[0]["type"] in ("union_tag_not_found", "model_attributes_type"):
            return Rejection("invalid_event: not an event envelope with a type")
        return Rejection(f"invalid_event: {describe_validation_error(exc)}")
