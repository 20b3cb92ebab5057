"""Structured logs: one JSON object per line.

Callers pass ``event_id`` / ``customer_id`` / durations through ``extra``; message text,
phone numbers and emails are never logged, so no field here carries them.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

_CONTEXT_FIELDS = (
    "event_id",
    "customer_id",
    "topic",
    "partition",
    "reason",
    "duration_seconds",
    "events",
    "outputs",
    "attempt",
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line with the context fields it carries."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in _CONTEXT_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return orjson.dumps(entry, default=str).decode("utf-8")


def json_handler() -> logging.Handler:
    """A stderr handler that writes JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    return handler


def configure_logging(level: str) -> None:
    """Send every log record to stderr as JSON at ``level``."""
    root = logging.getLogger()
    root.handlers[:] = [json_handler()]
    root.setLevel(level.upper())
