"""confluent-kafka plumbing: topic names and creation, client configs, confirmed delivery.

The worker, the CLI and the batch engine all build their clients here so that security
and profile settings apply everywhere the same way.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from portrait.config import Settings
from portrait.errors import ServiceUnreachable
from streams.records import OutputRecord

log = logging.getLogger("portrait.kafka")

INPUT_TOPICS: tuple[str, ...] = ("chat", "calls", "channel-events", "commands")
OUTPUT_TOPICS: tuple[str, ...] = ("profile-changes", "agent-prompts", "trends", "dlq")
COMPACTED_TOPICS: tuple[str, ...] = ("profiles",)
"""Keyed by customer id (account number): the newest record of a key is its state."""


def all_topics(settings: Settings) -> list[str]:
    """Full names of every topic Portrait reads or writes."""
    return [settings.topic(name) for name in INPUT_TOPICS + OUTPUT_TOPICS + COMPACTED_TOPICS]


class OncePerInterval(logging.Filter):
    """Lets a message through once per ``seconds`` (librdkafka repeats a failing
    connection's error many times a second)."""

    def __init__(self, seconds: float = 30.0) -> None:
        super().__init__()
        self.seconds = seconds
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = record.getMessage()
        now = time.monotonic()
        if now - self._last.get(key, -self.seconds) < self.seconds:
            return False
        self._last[key] = now
        return True


RDKAFKA_LOG = logging.getLogger("portrait.rdkafka")
RDKAFKA_LOG.addFilter(OncePerInterval())


def client_config(settings: Settings) -> dict[str, Any]:
    """Settings every confluent-kafka client shares; librdkafka logs through Python
    logging (``portrait.rdkafka``), each message at most once per 30 s."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap,
        "logger": RDKAFKA_LOG,
    } | settings.kafka_client_config()


def _all_refused(bootstrap: str) -> bool:
    """Whether every bootstrap address refuses a TCP connection outright (nothing
    listens there): then no wait can help. Names that do not resolve, timeouts and
    anything else leave the answer to the Kafka client."""
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return False
        except ConnectionRefusedError:
            continue
        except (OSError, ValueError):
            return False
    return True


def check_broker(settings: Settings, timeout: float = 5.0) -> AdminClient:
    """An admin client of a broker that answered; :class:`ServiceUnreachable` if none
    did within ``timeout`` seconds (at once when every address refuses connections)."""
    if _all_refused(settings.kafka_bootstrap):
        raise ServiceUnreachable("Kafka", settings.kafka_bootstrap)
    admin = AdminClient(client_config(settings))
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise ServiceUnreachable("Kafka", settings.kafka_bootstrap) from exc
    return admin


def topic_config(settings: Settings, topic: str = "") -> dict[str, str]:
    """Explicit per-topic configs; some brokers (Tansu) describe only what was set. The
    compacted topics keep every key's newest record for good (tombstones a day)."""
    if topic in {settings.topic(name) for name in COMPACTED_TOPICS}:
        return {"cleanup.policy": "compact", "delete.retention.ms": str(24 * 3600 * 1000)}
    return {"cleanup.policy": "delete", "retention.ms": str(settings.topic_retention_ms)}


def ensure_topics(settings: Settings, timeout: float = 15.0) -> list[str]:
    """Create every missing Portrait topic with explicit configs; returns those created."""
    admin = check_broker(settings, timeout=min(timeout, 5.0))
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [t for t in all_topics(settings) if t not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [
            NewTopic(
                topic,
                num_partitions=settings.topic_partitions,
                replication_factor=settings.topic_replication,
                config=topic_config(settings, topic),
            )
            for topic in wanted
        ],
        operation_timeout=timeout,
    )
    created = []
    for topic, future in futures.items():
        try:
            future.result(timeout)
            created.append(topic)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    log.info("topics created", extra={"events": len(created)})
    return created


def make_producer(settings: Settings, **overrides: Any) -> Producer:
    """A producer that waits for all in-sync replicas and batches briefly."""
    config = client_config(settings) | {
        "acks": "all",
        "linger.ms": 2,
        "queue.buffering.max.messages": 500_000,
        "compression.type": "none",
    }
    config.update(overrides)
    return Producer(config)


class DeliveryError(RuntimeError):
    """Some outputs of a batch were not confirmed by the broker."""


def produce_confirmed(producer: Producer, records: Sequence[OutputRecord]) -> None:
    """Produce records and block until the broker confirmed every one (or raise)."""
    failures: list[str] = []

    def on_delivery(error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            failures.append(error.str())

    for record in records:
        while True:
            try:
                producer.produce(record.topic, record.value, record.key, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
    remaining = producer.flush(30)
    if remaining or failures:
        raise DeliveryError(
            f"{remaining} outputs unconfirmed, {len(failures)} failed: {failures[:3]}"
        )


class ConfirmedProducer:
    """Async wrapper: delivers a batch of outputs off the event loop and waits for acks."""

    def __init__(self, settings: Settings) -> None:
        self.producer = make_producer(settings)

    async def deliver(self, records: Sequence[OutputRecord]) -> None:
        """Send the records; returns once the broker confirmed all of them."""
        if records:
            await asyncio.get_running_loop().run_in_executor(
                None, produce_confirmed, self.producer, records
            )

    def close(self) -> None:
        """Flush what is left."""
        self.producer.flush(10)


def consume_ready(consumer: Any, most: int, wait: float) -> list[Any]:
    """The messages ready now, returning as soon as one arrives (up to ``wait`` s for the
    first): ``Consumer.consume`` waits for ``most`` messages or the whole timeout, which
    adds up to the timeout to every record's latency."""
    first = consumer.poll(wait)
    return [first, *consumer.consume(most - 1, 0)] if first is not None else []


def read_topic(
    settings: Settings,
    topic: str,
    *,
    expect: int | None = None,
    timeout: float = 30.0,
    idle_timeout: float | None = None,
) -> list[tuple[bytes | None, bytes]]:
    """Every (key, value) of a topic from the beginning, without a consumer group.

    Stops at ``expect`` records, after ``idle_timeout`` seconds without one, or at
    ``timeout``.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        client_config(settings) | {"group.id": "portrait-reader", "enable.auto.commit": False}
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions])
        out: list[tuple[bytes | None, bytes]] = []
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline and (expect is None or len(out) < expect):
            if idle_timeout is not None and time.monotonic() - last > idle_timeout:
                break
            for message in consumer.consume(1000, 0.2):
                if message.error() is None:
                    out.append((message.key(), message.value() or b""))
                    last = time.monotonic()
        return out
    finally:
        consumer.close()
