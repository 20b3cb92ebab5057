"""The real ``portrait worker`` as a fixture, and what integration tests ask of it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cli.stack import stop_process
from portrait.config import Settings
from streams.kafka import client_config, ensure_topics, make_producer, produce_confirmed, read_topic
from streams.produce import route
from tests.support.envelopes import settings_env

PORTRAIT = [sys.executable, "-m", "cli"]

StartWorker = Callable[[Settings, Path], AbstractContextManager[subprocess.Popen[bytes]]]


@contextmanager
def _portrait(settings: Settings, log: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A ``portrait`` command with these settings, its output in ``log``; stopped
    (SIGTERM, then SIGKILL) on exit."""
    with log.open("ab") as handle:
        process = subprocess.Popen(
            [*PORTRAIT, *args],
            env=settings_env(settings),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process
    finally:
        stop_process(process)


def _worker(settings: Settings, log: Path) -> AbstractContextManager[subprocess.Popen[bytes]]:
    return _portrait(settings, log, "worker")


def serving(
    settings: Settings, port: int, log: Path
) -> AbstractContextManager[subprocess.Popen[bytes]]:
    """``portrait serve`` on a port, stopped on exit."""
    return _portrait(settings, log, "serve", "--port", str(port))


@pytest.fixture
def worker() -> StartWorker:
    """``with worker(settings, log) as process:`` a running worker; stopped (SIGTERM,
    then SIGKILL) on exit."""
    return _worker


def http_get(settings: Settings, path: str) -> tuple[int, str]:
    """Status and body of a GET on the worker's HTTP port."""
    url = f"http://127.0.0.1:{settings.http_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


class Metrics:
    """A ``/metrics`` page, read by sample: ``metrics.value(name, **labels)`` (the labels
    given exactly; a default worker adds ``lane`` to every sample)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, tuple(sorted(labels.items()))))


def produce(settings: Settings, events: list[Any], topic: str | None = None) -> None:
    """Send events (dicts, or raw bytes) to their topics, confirmed."""
    ensure_topics(settings)
    lines = [e if isinstance(e, bytes) else orjson.dumps(e) for e in events]
    produce_confirmed(make_producer(settings), [route(settings, line, topic) for line in lines])


def profile_get(settings: Settings, *args: str) -> tuple[int, dict[str, Any] | None, str]:
    """``portrait profile get … --json``: exit code, document, stderr."""
    done = subprocess.run(
        [*PORTRAIT, "profile", "get", *args, "--json"],
        env=settings_env(settings),
        capture_output=True,
        timeout=60,
        check=False,
    )
    body = json.loads(done.stdout) if done.returncode == 0 else None
    return done.returncode, body, done.stderr.decode()


def wait_for(check: Callable[[], bool], timeout: float = 60.0, what: str = "condition") -> None:
    """Poll ``check`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def output_times(settings: Settings, short: str) -> dict[str, float]:
    """When each event's output reached an output topic (short name): source event id
    -> the output record's create time in epoch seconds, set by the worker's producer,
    so it says when the worker produced it, not when a reader noticed."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    topic = settings.topic(short)
    consumer = Consumer(client_config(settings) | {"group.id": "portrait-test-reader"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        times: dict[str, float] = {}
        while batch := consumer.consume(1000, 2.0):
            for message in (m for m in batch if m.error() is None):
                key = orjson.loads(message.value() or b"{}").get("source_event_id")
                times[str(key)] = max(times.get(str(key), 0.0), message.timestamp()[1] / 1000)
        return times
    finally:
        consumer.close()


def outputs(settings: Settings, short: str) -> list[dict[str, Any]]:
    """Every event on an output topic (short name), decoded."""
    records = read_topic(settings, settings.topic(short), timeout=30, idle_timeout=5)
    return [orjson.loads(value) for _, value in records]
