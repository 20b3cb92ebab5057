"""PORTRAIT_REDIS_DURABILITY against real servers: what each setting waits for, and when
it cannot be met (what /readyz reports)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from cli.bench.durability import _server
from cli.stack import free_port, stop_process
from portrait.config import Settings
from state.answers import RedisUnwell
from state.durability import Durability

# durability waits are per connection of a standalone Redis (a cluster store takes none)
pytestmark = pytest.mark.standalone


@pytest.fixture
def aof_valkey(tmp_path: Path) -> Iterator[str]:
    """A Valkey with an AOF (everysec) and no replica."""
    port = free_port()
    process: subprocess.Popen[bytes] = _server(port, tmp_path)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_process(process)


def _check(url: str, durability: Durability) -> tuple[bool, str]:
    async def go() -> tuple[bool, str]:
        client = aioredis.Redis.from_url(url)
        try:
            await client.set("k", "v")
            possible = await durability.possible(client)
            try:
                await durability.wait(client)
            except RedisUnwell as unwell:
                return possible, str(unwell)
            return possible, "waited"
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_aof_durability_waits_for_the_fsync(aof_valkey: str) -> None:
    assert _check(aof_valkey, Durability("aof", 500)) == (True, "waited")


def test_replica_durability_without_a_replica_is_not_possible(aof_valkey: str) -> None:
    possible, said = _check(aof_valkey, Durability("replica", 50))
    assert not possible and "replica" in said


def test_aof_durability_on_a_redis_without_an_aof_is_not_possible(
    redis_settings: Settings,
) -> None:
    # the session Redis keeps nothing on disk
    possible, _ = _check(redis_settings.redis_url, Durability("aof", 50))
    assert not possible
    assert _check(redis_settings.redis_url, Durability("none", 50)) == (True, "waited")
