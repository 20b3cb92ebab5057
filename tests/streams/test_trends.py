"""Group analysis: windows counted by the state script, emitted once, read by the CLI."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest

from portrait.config import Settings
from portrait.events import OUTPUT_MODELS
from state.store import redis_client
from streams.records import OutputRecord
from streams.testing import ListSink, input_records
from streams.trends import emit_closed_windows
from tests.support.envelopes import media_chat, settings_env
from tests.support.pipeline import RunBatch
from tests.support.worker import PORTRAIT

# yesterday (Shanghai): inside the trends retention (7 days) whatever today's date is
DAY = (datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")) - timedelta(days=1)).date()
TEXTS = [
    ("t1", f"{DAY}T10:05:00+08:00", "又停电了，冰箱里的东西都坏了"),
    ("t2", f"{DAY}T10:40:00+08:00", "停电第二次了，什么时候恢复供电"),
    ("t3", f"{DAY}T11:10:00+08:00", "我的账单多扣了钱"),
]


def emit(settings: Settings, deliver: Any) -> int:
    async def go() -> int:
        client = redis_client(settings)
        try:
            return await emit_closed_windows(client, settings, deliver)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_windows_are_counted_once_and_emitted_once(
    redis_settings: Settings, run_batch: RunBatch
) -> None:
    batch = input_records("t.chat", [media_chat(eid, at, text) for eid, at, text in TEXTS])
    run_batch(redis_settings, batch, ListSink())
    run_batch(redis_settings, batch, ListSink())  # redelivered: counted once
    sent: list[OutputRecord] = []

    async def deliver(out: Sequence[OutputRecord]) -> None:
        sent.extend(out)

    assert emit(redis_settings, deliver) == 2  # 10:00–11:00 and 11:00–12:00 (+08:00)
    assert emit(redis_settings, deliver) == 0  # claimed: never twice
    first, second = (orjson.loads(r.value) for r in sorted(sent, key=lambda r: r.key))
    for body in (first, second):
        OUTPUT_MODELS["trends.window"].model_validate(body)
    assert sent[0].topic == redis_settings.topic("trends")
    assert first["window_start"] == f"{DAY}T02:00:00.000Z"
    assert first["window_end"] == f"{DAY}T03:00:00.000Z"
    assert first["messages"] == 2 and first["intents"] == {"outage": 2}
    assert first["terms"][0] == {"term": "停电", "count": 2}
    assert second["intents"] == {"billing": 1}

    done = subprocess.run(
        [*PORTRAIT, "trends", "--window", "1d", "--json"],
        env=settings_env(redis_settings),
        capture_output=True,
        check=True,
        timeout=60,
    )
    [day] = orjson.loads(done.stdout)
    assert day["window_start"] == f"{DAY}T00:00:00.000Z"
    assert day["messages"] == 3 and day["intents"] == {"outage": 2, "billing": 1}


def test_a_failed_delivery_releases_the_window(
    redis_settings: Settings, run_batch: RunBatch
) -> None:
    run_batch(
        redis_settings,
        input_records("t.chat", [media_chat("u1", TEXTS[0][1], TEXTS[0][2])]),
        ListSink(),
    )

    async def broken(_out: Sequence[OutputRecord]) -> None:
        raise RuntimeError("broker unavailable")

    with pytest.raises(RuntimeError):
        emit(redis_settings, broken)
    sent: list[OutputRecord] = []

    async def deliver(out: Sequence[OutputRecord]) -> None:
        sent.extend(out)

    assert emit(redis_settings, deliver) == 1 and len(sent) == 1


def test_an_open_window_waits(redis_settings: Settings, run_batch: RunBatch) -> None:
    settings = redis_settings.model_copy(update={"trends_window_seconds": 10 * 365 * 86400})
    run_batch(
        settings, input_records("t.chat", [media_chat("o1", TEXTS[0][1], TEXTS[0][2])]), ListSink()
    )

    async def deliver(_out: Sequence[OutputRecord]) -> None:
        raise AssertionError("an open window was emitted")

    assert emit(settings, deliver) == 0
