"""A command that cannot reach Redis or Kafka says so in one line and exits with its
documented code (3 Redis, 4 Kafka), with no traceback unless ``--debug``."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from cli.stack import free_port
from portrait.config import Settings
from portrait.errors import KAFKA_UNREACHABLE, REDIS_UNREACHABLE
from streams.kafka import _all_refused
from tests.support.envelopes import settings_env
from tests.support.worker import PORTRAIT

EVENT = (
    b'{"event_id":"a","type":"channel.event","occurred_at":"2026-11-01T00:00:00Z",'
    b'"source":"app","customer":{"phone":"1"},"payload":{"action":"login"}}\n'
)


def _run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PORTRAIT, *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


@pytest.mark.parametrize(
    "args",
    [
        ("profile", "get", "--phone", "13900000000"),
        ("products",),
        ("trends",),
        ("problems", "--phone", "13900000000"),
    ],
)
def test_redis_commands_name_the_address_they_could_not_reach(args: tuple[str, ...]) -> None:
    settings = Settings(redis_url=f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    done = _run(settings, *args)
    assert done.returncode == REDIS_UNREACHABLE
    [line] = done.stderr.strip().splitlines()
    assert f"127.0.0.1:{settings.redis_port}" in line and "portrait stack up" in line
    assert "s3cret" not in done.stderr  # the URL's password is never printed


@pytest.mark.parametrize(
    "args",
    [
        ("produce", "{file}"),
        ("import", "{file}"),
        ("erase", "--phone", "13900000000"),
        ("tail", "chat", "--max", "1"),
        ("replay", "--namespace", "fresh-replay:"),
        ("worker",),
    ],
)
def test_kafka_commands_name_the_broker_they_could_not_reach(
    args: tuple[str, ...], redis_url: str, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(EVENT)
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", redis_url=redis_url)
    done = _run(settings, *(a.format(file=events) for a in args))
    assert done.returncode == KAFKA_UNREACHABLE, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert settings.kafka_bootstrap in line and "portrait stack up" in line
    assert "Traceback" not in done.stderr


def test_a_broker_address_is_given_up_at_once_only_when_nothing_listens() -> None:
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        open_port = listening.getsockname()[1]
        refused = f"127.0.0.1:{free_port()}"
        assert _all_refused(refused) and _all_refused(f"{refused},{refused}")
        # one address that answers, or one the client must resolve: the client decides
        assert not _all_refused(f"{refused},127.0.0.1:{open_port}")
        assert not _all_refused(f"no-such-host.invalid:{free_port()}")


def test_debug_shows_the_traceback() -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    done = _run(settings, "--debug", "products")
    assert done.returncode == REDIS_UNREACHABLE
    assert "Traceback" in done.stderr and "portrait stack up" in done.stderr
