"""Shared fixtures: a private Redis and a private Tansu broker per test session, on free ports.

Nothing here touches a server the tests did not start.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.stack import (
    cluster_ports,
    free_port,
    port_answers,
    redis_command,
    start_cluster,
    stop_process,
    tansu_command,
)
from portrait.config import Settings

pytest_plugins = ["tests.support.pipeline", "tests.support.worker"]

ROOT = Path(__file__).resolve().parent.parent


def _start(command: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as handle:
        process = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    deadline = time.monotonic() + 20
    while not port_answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{command[0]} did not start: {log.read_text()[-2000:]}")
        time.sleep(0.05)
    return process


CLUSTER = os.environ.get("PORTRAIT_REDIS_CLUSTER", "").lower() in ("1", "true", "yes")
"""``make test-cluster``: every test's Redis is a 3-master cluster (and every Settings
reads PORTRAIT_REDIS_CLUSTER=true from the environment)."""


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Redis started for this session only (a cluster's first node under
    ``make test-cluster``)."""
    if CLUSTER:
        yield from _cluster(tmp_path_factory)
        return
    port = free_port()
    process = _start(redis_command(port), port, tmp_path_factory.mktemp("redis") / "redis.log")
    yield f"redis://127.0.0.1:{port}/0"
    stop_process(process)


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the first node of a 3-master Redis Cluster started for this session only."""
    yield from _cluster(tmp_path_factory)


def _cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    ports = cluster_ports()
    processes = start_cluster(ports, tmp_path_factory.mktemp("cluster"))
    try:
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for process in processes:
            stop_process(process)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a Tansu broker started for this session only."""
    port = free_port()
    process = _start(tansu_command(port), port, tmp_path_factory.mktemp("tansu") / "tansu.log")
    yield f"127.0.0.1:{port}"
    stop_process(process)


@pytest.fixture
def unique() -> str:
    """A short unique token for topic and key prefixes."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def redis_settings(redis_url: str, unique: str) -> Settings:
    """Settings with a fresh Redis key namespace on the session Redis."""
    # the models read on a thread here: a model process per test pipeline would load
    # every model again (tests/streams/test_reading.py covers the process)
    return Settings(redis_url=redis_url, redis_key_prefix=f"t{unique}:", model_process=False)


@pytest.fixture
def stack_settings(redis_url: str, kafka_bootstrap: str, unique: str) -> Settings:
    """Settings with fresh topics and a fresh Redis namespace on the session servers.
    Workers run without the profiles publisher beside them (on two cores it takes the
    CPU the timed tests measure); the tests of the profiles topic turn it on."""
    return Settings(
        redis_url=redis_url,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"t{unique}.",
        redis_key_prefix=f"t{unique}:",
        consumer_group=f"portrait-{unique}",
        http_port=free_port(),
        profiles_topic=False,
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``make test-cluster``, tests that read a standalone Redis's keys directly
    are left out."""
    if CLUSTER:
        skip = pytest.mark.skip(reason="reads a standalone Redis's keys directly")
        for item in items:
            if "standalone" in item.keywords:
                item.add_marker(skip)
