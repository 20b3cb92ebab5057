"""Bulk imports for ``portrait import``: JSONL or CSV rows → ``source.imported`` commands.

Each row becomes one ``source.imported`` event on the commands topic. Columns (CSV) or keys
(JSONL) named like identifier kinds (``phone``, ``account_no`` …) identify the customer;
``occurred_at`` dates the record; ``interactions`` (JSONL) carries past interactions;
everything else is an attribute. ``--map column=target`` renames (``target`` an identifier
kind, ``attr:<name>``, ``occurred_at`` or ``ignore``). A JSONL line that already is a
``source.imported`` envelope is sent as it is.

Event ids derive from the source name and the row's content, so importing the same file
twice changes nothing the second time.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import ValidationError

from portrait.config import LOCAL_CUSTOMER_ID_KEY
from portrait.events import IDENTIFIER_TYPES, INPUT_EVENT_ADAPTER
from processors.envelope import describe_validation_error


@dataclass(slots=True)
class ImportSummary:
    """Rows accepted (produced) and rejected, with the reasons of the rejected."""

    accepted: int = 0
    rejected: int = 0
    reasons: list[str] = field(default_factory=list)


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """``["Mobile=phone", "Nom=attr:name"]`` → ``{"Mobile": "phone", "Nom": "attr:name"}``."""
    mapping = {}
    for pair in pairs:
        column, sep, target = pair.partition("=")
        if not sep or not column or not target:
            raise ValueError(f"--map wants column=target, got {pair!r}")
        mapping[column] = target
    return mapping


def rows(data: bytes, fmt: str) -> Iterator[dict[str, Any] | None]:
    """Rows of a JSONL or CSV file; None for a line that is not a JSON object."""
    if fmt == "csv":
        yield from csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
        return
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            yield None
            continue
        yield row if isinstance(row, dict) else None


def import_event(
    row: Mapping[str, Any],
    source: str,
    mapping: Mapping[str, str],
    confidence: float | None,
    key: bytes = LOCAL_CUSTOMER_ID_KEY,
) -> dict[str, Any]:
    """The ``source.imported`` envelope for one row. Its event id is a keyed digest of the
    row (HMAC with the customer-id key): the same row gives the same id, so importing a
    file again changes nothing, and the id, which logs and outputs carry, cannot be
    reversed by trying every phone number a row could hold."""
    if row.get("type") == "source.imported":
        return dict(row)
    customer: dict[str, list[str]] = {}
    attributes: dict[str, Any] = {}
    occurred_at = None
    interactions: list[Any] = []
    for column, value in row.items():
        if value is None or value == "":
            continue
        target = mapping.get(column, column)
        if target == "ignore":
            continue
        if target in IDENTIFIER_TYPES:
            customer.setdefault(target, []).append(str(value))
        elif target == "occurred_at":
            occurred_at = str(value)
        elif target == "interactions" and isinstance(value, list):
            interactions = value
        else:
            attributes[target.removeprefix("attr:")] = value
    row_bytes = source.encode() + orjson.dumps(row, option=orjson.OPT_SORT_KEYS)
    digest = hmac.new(key, b"import|" + row_bytes, hashlib.sha256)
    payload: dict[str, Any] = {"attributes": attributes, "interactions": interactions}
    if confidence is not None:
        payload["confidence"] = confidence
    return {
        "event_id": f"import-{digest.hexdigest()[:32]}",
        "type": "source.imported",
        "occurred_at": occurred_at or datetime.now(UTC).isoformat(timespec="seconds"),
        "source": source,
        "customer": customer,
        "payload": payload,
    }


def build_imports(
    data: bytes,
    fmt: str,
    source: str,
    mapping: Mapping[str, str],
    confidence: float | None = None,
    key: bytes = LOCAL_CUSTOMER_ID_KEY,
) -> tuple[list[bytes], ImportSummary]:
    """Validated ``source.imported`` lines for every good row, and the summary (``key``:
    the customer-id key the rows' event ids are keyed with)."""
    summary = ImportSummary()
    lines = []
    for number, row in enumerate(rows(data, fmt), start=1):
        if row is None:
            summary.rejected += 1
            summary.reasons.append(f"row {number}: not a JSON object")
            continue
        line = orjson.dumps(import_event(row, source, mapping, confidence, key))
        try:
            INPUT_EVENT_ADAPTER.validate_json(line)
        except ValidationError as exc:
            summary.rejected += 1
            summary.reasons.append(f"row {number}: {describe_validation_error(exc)}")
            continue
        summary.accepted += 1
        lines.append(line)
    return lines, summary
