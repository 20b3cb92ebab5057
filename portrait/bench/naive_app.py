"""The naive baseline of ``portrait bench``: a Faust agent that awaits Redis and a send per event.

This is how a Faust app is usually first written; the benchmark compares Portrait to it.
Configured by ``PORTRAIT_*`` variables plus ``BENCH_IN`` / ``BENCH_OUT`` topic names.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import faust
import orjson
import redis.asyncio as aioredis

from portrait.config import load_settings


def main() -> None:
    """Run the naive worker until stopped."""
    settings = load_settings()
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = faust.App(
        settings.consumer_group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        processing_guarantee="at_least_once",
        broker_session_timeout=settings.effective_session_timeout,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
        web_enabled=False,
    )
    source = app.topic(os.environ["BENCH_IN"], value_type=bytes, value_serializer="raw")
    sink = app.topic(os.environ["BENCH_OUT"], value_type=bytes, value_serializer="raw")
    client = aioredis.Redis.from_url(settings.redis_url)

    @app.agent(source)  # type: ignore[untyped-decorator]
    async def naive(stream: Any) -> None:
        async for value in stream:
            event = orjson.loads(value)
            account = event["customer"]["account_no"]
            await client.hincrby(f"{settings.redis_key_prefix}{account}", "events_total", 1)
            await sink.send(
                key=account.encode(), value=orjson.dumps({"source_event_id": event["event_id"]})
            )

    faust.Worker(
        app, loglevel="WARNING", quiet=True, override_logging=False
    ).execute_from_commandline()


if __name__ == "__main__":
    main()
