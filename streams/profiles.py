"""The profiles topic (docs/design.md "Profiles topic"): the whole current document per key.

``portrait.profiles`` is compacted and keyed by customer id (account number for
accounts), so a subscriber that starts late reads it from the beginning and has every
live profile. A publisher process reads ``portrait.profile-changes`` (consumer group
``<PORTRAIT_CONSUMER_GROUP>-profiles``) and publishes: ``portrait worker`` starts one
beside itself (``PORTRAIT_PROFILES_TOPIC``, default on), ``portrait publish-profiles``
runs one alone. Apart from the input pipeline on purpose: building whole documents in
the worker's event loop halved its throughput (``portrait bench --emotion``: 0.89× →
0.46× the model alone); here a batch of changes costs one read per customer or account
it names, however many events changed them, scored and built together. Offsets are
committed only after the batch's records are confirmed (at least once).

Each named key is published as it is in Redis *now*: the document when it is live, a
tombstone (null value) when it is not — merged away (``profile.merged``'s
``merged_id``) or erased. Publishing the current state rather than the event's makes a
redelivered or out-of-order change harmless: the last record of a key is the newest
state read. (The local broker, Tansu, drops records with a null value; Apache Kafka keeps
them until compaction removes the key.)
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from confluent_kafka import Consumer
from tenacity import AsyncRetrying, retry_if_not_exception_type, wait_exponential_jitter

from models.customer_model import CustomerModel
from models.registry import ModelRegistry, customer_model_in_use
from portrait.config import Settings, yield_cpu
from portrait.logs import configure_logging
from processors.document import DocumentSettings, document_settings
from processors.layout import ACCOUNT_ENTITY
from state.store import RedisProfileStore
from state.stores import store_for
from streams.kafka import ConfirmedProducer, client_config, consume_ready
from streams.lookup import get_account, profiles_by_id
from streams.records import OutputRecord
from streams.replay import customer_ids

log = logging.getLogger("portrait.profiles")

PERSON, ACCOUNT = "person", "account"
SNAPSHOT_BATCH = 200


def named_keys(changes: Sequence[bytes | None]) -> dict[tuple[str, str], None]:
    """The (kind, key) pairs a batch of ``portrait.profile-changes`` values names, in
    order, each once."""
    named: dict[tuple[str, str], None] = {}
    for raw in changes:
        try:
            change = orjson.loads(raw or b"")
        except orjson.JSONDecodeError:
            continue
        if not isinstance(change, dict):
            continue
        if change.get("type") == "account.changed" and change.get("account_no"):
            named[(ACCOUNT, str(change["account_no"]))] = None
            continue
        for name in ("customer_id", "merged_id"):
            if change.get(name):
                named[(PERSON, str(change[name]))] = None
    return named


async def profile_records(
    changes: Sequence[bytes | None],
    store: RedisProfileStore,
    model: CustomerModel,
    settings: Settings,
    document: DocumentSettings,
) -> list[OutputRecord]:
    """The ``portrait.profiles`` records for a batch of changes: each named key's document
    as it is now, or a tombstone (the people read and scored together)."""
    topic = settings.topic("profiles")
    named = list(named_keys(changes))
    people = await profiles_by_id(
        store, [key for kind, key in named if kind == PERSON], model, document
    )
    out = []
    for kind, key in named:
        found: dict[str, Any] | None
        if kind == ACCOUNT:
            found = await get_account(store, key, document)
        else:
            found = people[key]
        value = orjson.dumps(found) if found is not None else None
        out.append(OutputRecord(topic, key.encode(), value))
    return out


async def snapshot(
    settings: Settings,
    store: RedisProfileStore,
    model: CustomerModel,
    document: DocumentSettings,
    write: Callable[[bytes], object],
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Write every live profile in Redis, one JSON document per line (``portrait snapshot``);
    returns how many. ``progress`` gets (written, total)."""
    people = [cid for cid in await customer_ids(store) if not cid.startswith(ACCOUNT_ENTITY)]
    written = 0
    for start in range(0, len(people), SNAPSHOT_BATCH):
        chunk = people[start : start + SNAPSHOT_BATCH]
        documents = await profiles_by_id(store, chunk, model, document)
        for customer_id in chunk:
            found = documents[customer_id]
            if found is not None:  # erased or merged away since the scan
                write(orjson.dumps(found) + b"\n")
                written += 1
        if progress is not None:
            progress(start + len(chunk), len(people))
    return written


def _consumer(settings: Settings) -> Consumer:
    consumer = Consumer(
        client_config(settings)
        | {
            "group.id": f"{settings.consumer_group}-profiles",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": int(settings.effective_session_timeout * 1000),
            "fetch.wait.max.ms": 50,
        }
    )
    consumer.subscribe([settings.topic("profile-changes")])
    return consumer


async def publish(settings: Settings, stopping: asyncio.Event) -> None:
    """Publish ``portrait.profiles`` until ``stopping`` is set: each batch of changes
    delivered and confirmed, then its offsets committed; a failed batch is retried."""
    loop = asyncio.get_running_loop()
    consumer = _consumer(settings)
    store = store_for(settings)
    producer = ConfirmedProducer(settings)
    document = document_settings(settings)
    registry = ModelRegistry(store.redis, settings.redis_key_prefix)
    try:
        while not stopping.is_set():
            batch = await loop.run_in_executor(
                None, consume_ready, consumer, settings.batch_max_events, 0.2
            )
            values = [m.value() for m in batch if m.error() is None]
            if not values:
                continue
            async for attempt in AsyncRetrying(  # until delivered: the offsets wait
                wait=wait_exponential_jitter(initial=0.2, max=5.0),
                retry=retry_if_not_exception_type(asyncio.CancelledError),
                before_sleep=_retrying,
            ):
                with attempt:
                    model = await customer_model_in_use(registry, settings.customer_model_version)
                    records = await profile_records(values, store, model, settings, document)
                    await producer.deliver(records)
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
        producer.close()
        await store.close()


def _retrying(state: Any) -> None:
    log.error(
        "profiles batch failed; retrying",
        exc_info=state.outcome.exception() if state.outcome else None,
        extra={"attempt": state.attempt_number},
    )


def run_publisher(settings: Settings) -> None:
    """``portrait publish-profiles``: publish until SIGTERM or SIGINT."""
    configure_logging(settings.log_level)
    settings.check_production()
    yield_cpu(settings)  # background work: a realtime lane on this host goes first

    async def main() -> None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        log.info("publishing portrait.profiles", extra={"reason": "start"})
        started = time.monotonic()
        await publish(settings, stopping)
        log.info("stopped", extra={"duration_seconds": round(time.monotonic() - started, 1)})

    asyncio.run(main())


if __name__ == "__main__":  # the publisher a default worker starts (streams/worker.py)
    from portrait.config import load_settings

    run_publisher(load_settings())
