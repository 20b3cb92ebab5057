"""Model versions in Redis, shared by every worker: publish, select, roll back.

Keys (under the Redis key prefix): ``models:<name>:current`` and ``:previous`` (version
names), ``models:<name>:seq`` (the counter that numbers learned versions) and one hash per
version, ``models:<name>:v:<version>``, with its ONNX bytes and its checked quality.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from models.customer_model import CustomerModel, default_customer_model


class ModelRegistry:
    """Versions of one model (``customer``) in Redis."""

    def __init__(self, client: aioredis.Redis, prefix: str, name: str = "customer") -> None:
        self.redis = client
        # on a Redis Cluster the keys share a hash tag: publishing is one transaction
        tag = f"{{{name}}}" if isinstance(client, RedisCluster) else name
        self.base = f"{prefix}models:{tag}:"

    async def next_number(self) -> int:
        """A number no other worker will use for a new version."""
        return int(await self.redis.incr(self.base + "seq"))

    async def publish(self, version: str, onnx: bytes, quality: float) -> None:
        """Store a version and make it current; the one it replaces becomes previous."""
        current = await self.redis.get(self.base + "current")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.base + f"v:{version}", mapping={"onnx": onnx, "quality": str(quality)})
        if current:
            pipe.set(self.base + "previous", current)
        pipe.set(self.base + "current", version)
        await pipe.execute()

    async def current(self) -> str | None:
        """The version workers should score with, or None (the shipped one)."""
        found = await self.redis.get(self.base + "current")
        return found.decode() if isinstance(found, bytes) else found

    async def load(self, version: str) -> bytes | None:
        """The ONNX bytes of a stored version."""
        found = await self.redis.hget(self.base + f"v:{version}", "onnx")
        return found if isinstance(found, bytes) else None

    async def roll_back(self) -> str | None:
        """Make the previous version current again; returns it."""
        previous = await self.redis.get(self.base + "previous")
        if previous:
            await self.redis.set(self.base + "current", previous)
        return previous.decode() if isinstance(previous, bytes) else previous


async def customer_model_in_use(registry: ModelRegistry, pinned: str = "") -> CustomerModel:
    """The customer-feature model workers score with: ``pinned`` if given (the
    ``PORTRAIT_CUSTOMER_MODEL_VERSION``), else the registry's current version, else the
    shipped one (also when a named version is not in the registry)."""
    shipped = default_customer_model()
    wanted = pinned or await registry.current()
    if not wanted or wanted == shipped.version:
        return shipped
    onnx = await registry.load(wanted)
    return CustomerModel.from_bytes(onnx, wanted, shipped.card) if onnx else shipped
