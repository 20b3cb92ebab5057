"""Baseline Faust apps of ``portrait bench``, run as ``python -m cli.bench.apps KIND``.

``naive``: the usual first Faust app — per event, await one Redis call and one send.
``floor``: Faust's own cost — batches taken without acking, one confirmed batch send of
one small output per event, then the acks; no decoding, no state. Portrait cannot be
faster than this per process, so it shows how much of Portrait's time is Faust's.

Configured by ``PORTRAIT_*`` variables plus ``BENCH_IN`` / ``BENCH_OUT`` topic names.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import faust
import orjson
import redis.asyncio as aioredis

from portrait.config import Settings, load_settings
from streams.kafka import ConfirmedProducer
from streams.records import OutputRecord


def _app(settings: Settings) -> tuple[faust.App, Any, Any]:
    app = faust.App(
        settings.consumer_group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        processing_guarantee="at_least_once",
        broker_session_timeout=settings.effective_session_timeout,
        consumer_auto_offset_reset="earliest",
        topic_allow_declare=False,
        topic_disable_leader=True,
        web_enabled=False,
        stream_buffer_maxsize=max(4 * settings.batch_max_events, 4096),
        broker_max_poll_records=settings.batch_max_events,
    )
    source = app.topic(
        os.environ["BENCH_IN"],
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    sink = app.topic(os.environ["BENCH_OUT"], value_type=bytes, value_serializer="raw")
    return app, source, sink


def _output(value: bytes) -> bytes:
    return orjson.dumps({"source_event_id": orjson.loads(value)["event_id"]})


def naive(settings: Settings) -> faust.App:
    """One awaited Redis call and one awaited send per event."""
    app, source, sink = _app(settings)
    client = aioredis.Redis.from_url(settings.redis_url)

    @app.agent(source)  # type: ignore[untyped-decorator]
    async def process(stream: Any) -> None:
        async for value in stream:
            event = orjson.loads(value)
            account = event["customer"]["customer_id"]
            await client.hincrby(f"{settings.redis_key_prefix}{account}", "events_total", 1)
            await sink.send(key=account.encode(), value=_output(value))

    return app


def floor(settings: Settings) -> faust.App:
    """Batches in, one confirmed batch send out, acks: Faust with no work to do."""
    app, source, _ = _app(settings)
    producer = ConfirmedProducer(settings)
    out_topic = os.environ["BENCH_OUT"]

    @app.agent(source)  # type: ignore[untyped-decorator]
    async def process(stream: Any) -> None:
        async for events in stream.noack_take(
            settings.batch_max_events, within=settings.batch_max_wait_seconds
        ):
            await producer.deliver(
                [OutputRecord(out_topic, e.message.key, _output(e.message.value)) for e in events]
            )
            for event in events:
                await stream.ack(event)

    return app


def main() -> None:
    """Run the baseline named on the command line until stopped."""
    settings = load_settings()
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = {"naive": naive, "floor": floor}[sys.argv[1]](settings)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, override_logging=False)
    sys.argv = sys.argv[:1]
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
