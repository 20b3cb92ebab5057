"""Every output the pipeline emits validates against its published JSON Schema."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jsonschema

from portrait.config import Settings
from state.store import redis_client
from streams.records import OutputRecord
from streams.testing import ListSink, input_records
from streams.trends import emit_closed_windows
from tests.support.envelopes import ANGRY_ZH, HISTORY, TURNS, call, chan, event, media_chat
from tests.support.pipeline import RunBatch

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "output"
# yesterday (Shanghai): the chat's trends window is inside the retention whatever the date
DAY = (datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")) - timedelta(days=1)).date()


def _story() -> list[Any]:
    friend = {"employee_id": "emp-7", "relation": "friend", "action": "added"}
    return [
        *HISTORY,
        *call("c-1", {"phone": "13900000001"}, TURNS),
        media_chat("m-1", f"{DAY}T10:00:00+08:00", ANGRY_ZH),  # → soothe_and_close, a trend
        event(
            "r-1",
            "relation.changed",
            "2026-11-20T10:01:00+08:00",
            "wecom",
            {"im_id": "wx-facts"},
            friend,
        ),  # → profile.snapshot
        chan("a-1", "2026-11-01T09:00:00+08:00", "app", {"phone": "13900000002"}),
        chan("a-2", "2026-11-02T09:00:00+08:00", "web", {"email": "a@example.com"}),
        chan(
            "a-3",
            "2026-11-03T09:00:00+08:00",
            "web",
            {"phone": "13900000002", "email": "a@example.com"},
        ),  # → profile.merged
        event(
            "x-1",
            "customer.erasure",
            "2026-11-04T09:00:00+08:00",
            "crm",
            {"email": "a@example.com"},
            {},
        ),  # → profile.erased
        chan(
            "b-1", "2026-11-05T09:00:00+08:00", "app", {"account_no": "ACC-S"}
        ),  # → account.changed
        b"{not json",  # → dlq.record
    ]


def _trends(settings: Settings) -> list[OutputRecord]:
    found: list[OutputRecord] = []

    async def deliver(records: list[OutputRecord]) -> None:
        found.extend(records)

    async def go() -> None:
        client = redis_client(settings)
        try:
            await emit_closed_windows(client, settings, deliver)
        finally:
            await client.aclose()

    asyncio.run(go())
    return found


def test_every_output_kind_validates_against_its_schema(
    redis_settings: Settings, run_batch: RunBatch
) -> None:
    sink = ListSink()
    run_batch(redis_settings, input_records("t.mixed", _story(), timestamp_ms=1.0), sink)
    outputs = sink.events() + [json.loads(r.value) for r in _trends(redis_settings)]
    seen: dict[str, int] = {}
    for output in outputs:
        schema = json.loads((SCHEMAS / f"{output['type']}.json").read_text(encoding="utf-8"))
        jsonschema.validate(output, schema)
        seen[output["type"]] = seen.get(output["type"], 0) + 1
    assert set(seen) == {path.stem for path in SCHEMAS.glob("*.json")}, seen
