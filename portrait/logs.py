"""Structured logs: one JSON object per line.

Callers pass ``event_id`` / ``customer_id`` / durations through ``extra``; message text,
phone numbers and emails are never logged, so no field here carries them. A record with
an exception carries its type, its message scrubbed of anything that could be personal
(:func:`scrub`) and, for an OS error, the path.
"""

from __future__ import annotations

import logging
import re
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
            entry.update(describe_error(record.exc_info[1]))
        return orjson.dumps(entry, default=str).decode("utf-8")


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_NUMBER = re.compile(r"\+?\d[\d \-]{3,}\d")
_CJK = re.compile(r"[\u3000-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]+")
_QUOTED_TEXT = re.compile(r"(['\"])[^'\"]*\s[^'\"]*\1")
MAX_MESSAGE_CHARS = 300


def scrub(text: str) -> str:
    """An error message with what could be personal taken out: e-mail addresses, runs of
    five or more digits (phones, ids), CJK text, and quoted values with spaces (message
    text); module names, paths and setting names stay. At most 300 characters."""
    text = _EMAIL.sub("<email>", text)
    text = _CJK.sub("<text>", text)
    text = _QUOTED_TEXT.sub("<text>", text)
    text = _NUMBER.sub("<number>", text)
    return text[:MAX_MESSAGE_CHARS]


def describe_error(error: BaseException | None) -> dict[str, str]:
    """What a log record says of an exception: its type, its message scrubbed of personal
    values, and for an OS error the path it concerns (an operator acts on the path)."""
    if error is None:
        return {}
    found = {"error": type(error).__name__, "error_message": scrub(str(error))}
    if isinstance(error, OSError) and error.filename is not None:
        found["path"] = str(error.filename)
    return found


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
