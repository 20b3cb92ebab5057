"""The state script as a Functions library (state/scripts.py), on a real Redis."""

from __future__ import annotations

import asyncio
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from portrait.config import Settings
from processors.profile import DeltaSettings
from state.scripts import CALL_MARK, StateScript, as_library
from state.store import RedisProfileStore, _lua
from tests.support.envelopes import chan
from tests.support.state import apply_events, delta_of

pytestmark = pytest.mark.standalone
DELTAS = DeltaSettings(timezone=ZoneInfo("Asia/Shanghai"))

EVENTS = [
    chan("f1", "2026-11-01T09:00:00+08:00", "app", {"phone": "138"}, city="上海"),
    chan("f2", "2026-11-02T09:00:00+08:00", "web", {"phone": "138"}, city="北京"),
]


def _calls(client: redis.Redis, command: str) -> int:
    return int(client.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_the_state_script_splits_into_set_up_and_call() -> None:
    source = _lua("apply_event.lua")
    assert source.count(CALL_MARK) == 1
    library, name = as_library(source)
    assert library.startswith(f"#!lua name={name}\n")
    assert f"redis.register_function('{name}'" in library
    # another text, another library: two versions on one Redis call their own
    assert as_library(source + "\n")[1] != name


def test_events_go_through_fcall_not_evalsha(redis_url: str, unique: str) -> None:
    settings = Settings(redis_url=redis_url, redis_key_prefix=f"s{unique}:")
    client = redis.Redis.from_url(redis_url)
    first = apply_events(settings, EVENTS[:1], DELTAS)  # loads the library if it is not there
    before = (_calls(client, "fcall"), _calls(client, "evalsha"))
    results = apply_events(settings, EVENTS, DELTAS)
    after = (_calls(client, "fcall"), _calls(client, "evalsha"))
    client.close()
    assert [r.status for r in first + results] == ["ok", "dup", "ok"]
    assert after[0] - before[0] == 1  # one FCALL per chunk
    assert after[1] == before[1]


def test_each_prefix_and_options_get_their_own_set_up(redis_url: str, unique: str) -> None:
    """The library keeps one set-up per (prefix, options): a store must never write
    under another store's prefix or with its options."""

    async def scenario() -> list[Any]:
        stores = [
            RedisProfileStore(redis_url, f"a{unique}:", keywords_shown=1),
            RedisProfileStore(redis_url, f"b{unique}:", keywords_shown=3),
        ]
        answers = []
        for store in stores:
            answers.append(await store.apply([delta_of(EVENTS[0], DELTAS)]))
        for store in stores:
            await store.close()
        return answers

    first, second = asyncio.run(scenario())
    client = redis.Redis.from_url(redis_url)
    a_keys = {k.decode() for k in client.scan_iter(f"a{unique}:*")}
    b_keys = {k.decode() for k in client.scan_iter(f"b{unique}:*")}
    client.close()
    assert first[0].status == second[0].status == "ok"
    assert a_keys and {k.replace(f"a{unique}:", f"b{unique}:", 1) for k in a_keys} == b_keys


class _OldRedis:
    """A client of a server without Functions (Redis < 7): FCALL is an unknown command."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.fcalls = 0

    async def fcall(self, *args: Any) -> Any:
        self.fcalls += 1
        raise ResponseError("unknown command 'FCALL', with args beginning with: ")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client, name)


def test_a_server_without_functions_gets_the_plain_script(redis_url: str, unique: str) -> None:
    async def scenario() -> list[Any]:
        client = aioredis.Redis.from_url(redis_url)
        old = _OldRedis(client)
        script = StateScript(_lua("apply_event.lua"))
        await client.script_flush()
        args = (f"o{unique}:", b'{"limits": {}}', b"", delta_of(EVENTS[0], DELTAS))
        first = await script.call(old, (), args)
        second = await script.call(old, (), args)
        await client.aclose()
        return [first, second, old.fcalls]

    first, second, fcalls = asyncio.run(scenario())
    assert first[0].startswith(b"ok") and second[0].startswith(b"dup")
    assert fcalls == 1  # asked once, then EVALSHA from then on
