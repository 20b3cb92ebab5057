"""How a batch's writes are made durable before its offsets are acknowledged
(``PORTRAIT_REDIS_DURABILITY``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from state.answers import RedisUnwell, text_of


@dataclass
class Durability:
    """``none``, ``aof`` (WAITAOF 1 0; a Redis older than 7.2 that fsyncs every write,
    ``appendfsync always``, needs no wait) or ``replica`` (WAIT 1)."""

    mode: str
    timeout_ms: int
    _fsync_always: bool | None = None

    async def _always(self, redis: aioredis.Redis) -> bool:
        if self._fsync_always is None:
            config: dict[Any, Any] = await redis.config_get("append*")
            values = {text_of(k): text_of(v) for k, v in config.items() if v is not None}
            self._fsync_always = values.get("appendonly") == "yes" and (
                values.get("appendfsync") == "always"
            )
        return self._fsync_always

    async def wait(self, redis: aioredis.Redis) -> None:
        if self.mode == "replica":
            if int(await redis.wait(1, self.timeout_ms)) < 1:
                raise RedisUnwell("no replica acknowledged the batch's writes in time")
        elif self.mode == "aof" and not await self._always(redis):
            try:
                local, _ = await redis.waitaof(1, 0, self.timeout_ms)
            except ResponseError as error:  # before Redis 7.2: no WAITAOF
                raise RedisUnwell("durability 'aof' needs WAITAOF or appendfsync always") from error
            if int(local) < 1:
                raise RedisUnwell("the batch's writes were not fsynced to the AOF in time")

    async def possible(self, redis: aioredis.Redis) -> bool:
        if self.mode == "replica":
            info = await redis.info("replication")
            return int(info.get("connected_slaves", 0)) >= 1
        if self.mode == "aof":
            info = await redis.info("persistence")
            if int(info.get("aof_enabled", 0)) != 1:
                return False
            if await self._always(redis):
                return True
            server = await redis.info("server")
            version = tuple(int(p) for p in str(server.get("redis_version", "0")).split(".")[:2])
            return version >= (7, 2)  # WAITAOF (Valkey reports 7.2.4)
        return True
