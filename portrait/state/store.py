"""The profile store: one small interface, one Redis implementation.

Every per-customer update is one call of ``apply_event.lua``; a batch of events is one
pipelined round trip. Outputs stay "pending" in Redis until the worker confirms their
delivery (``ack_outputs.lua``), so an event redelivered after a crash re-emits them
instead of losing them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from processors.profile import StoredState, empty_state

FAMILY_SECTIONS = ("meta", "cnt", "dec", "attr", "tag")


def _lua(name: str) -> str:
    return files("portrait.state").joinpath(name).read_text(encoding="utf-8")


def _as_list(value: Any) -> list[Any]:
    # cjson encodes an empty Lua table as {}, whatever it was meant to be.
    return list(value) if isinstance(value, list) else []


def _as_state(raw: dict[str, Any]) -> StoredState:
    state = empty_state()
    for section in FAMILY_SECTIONS:
        state[section] = dict(raw.get(section) or {})  # type: ignore[literal-required]
    state["ids"] = _as_list(raw.get("ids"))
    return state


@dataclass(slots=True)
class ApplyResult:
    """What applying one delta did.

    ``status``: ``ok`` (applied), ``dup`` (seen before; ``replay`` holds the outputs still
    pending delivery, if any), ``erased`` (``erased`` lists the customers removed) or
    ``noop`` (an erasure for no known customer).
    """

    status: str
    customer_id: str | None = None
    merged: list[str] = field(default_factory=list)
    state: StoredState | None = None
    old: dict[str, Any] = field(default_factory=dict)
    ids_added: list[str] = field(default_factory=list)
    erased: list[str] = field(default_factory=list)
    replay: ApplyResult | None = None

    @classmethod
    def from_json(cls, raw: bytes | str) -> ApplyResult:
        """Parse the state script's JSON answer."""
        data = orjson.loads(raw)
        return cls._from_dict(data)

    @classmethod
    def _from_dict(cls, data: dict[str, Any]) -> ApplyResult:
        replay = data.get("replay")
        return cls(
            status=data["status"],
            customer_id=data.get("cid"),
            merged=_as_list(data.get("merged")),
            state=_as_state(data["state"]) if "state" in data else None,
            old=dict(data.get("old") or {}),
            ids_added=_as_list(data.get("ids_added")),
            erased=_as_list(data.get("cids")),
            replay=cls._from_dict(replay) if isinstance(replay, dict) else None,
        )


class ProfileStore(Protocol):
    """Where profiles live. Implementations must apply each delta atomically and idempotently."""

    async def apply(self, deltas: Sequence[bytes]) -> list[ApplyResult]:
        """Apply deltas in order (one round trip); one result per delta."""
        ...

    async def confirm_delivered(self, applied: Sequence[tuple[str, str]]) -> None:
        """Forget pending outputs of these (customer id, event id) pairs."""
        ...

    async def resolve(self, identifier_key: str) -> str | None:
        """Customer id for a ``kind:value`` identifier, or None."""
        ...

    async def follow(self, customer_id: str) -> str | None:
        """The live customer id for an id (following merges), or None if unknown."""
        ...

    async def load(self, customer_id: str) -> StoredState | None:
        """Stored state of a live customer, or None."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class RedisProfileStore:
    """:class:`ProfileStore` on Redis (standalone or one shard; keys hash-tagged per customer)."""

    def __init__(self, url: str, prefix: str = "portrait:") -> None:
        self.prefix = prefix
        self.redis: aioredis.Redis = aioredis.Redis.from_url(url, decode_responses=False)
        self._apply_src = _lua("apply_event.lua")
        self._ack_src = _lua("ack_outputs.lua")
        self._apply_sha: str | None = None
        self._ack_sha: str | None = None

    async def _load_scripts(self) -> tuple[str, str]:
        self._apply_sha = str(await self.redis.script_load(self._apply_src))
        self._ack_sha = str(await self.redis.script_load(self._ack_src))
        return self._apply_sha, self._ack_sha

    async def _shas(self) -> tuple[str, str]:
        if self._apply_sha is None or self._ack_sha is None:
            return await self._load_scripts()
        return self._apply_sha, self._ack_sha

    def key(self, customer_id: str, section: str) -> str:
        """Key of one section of a customer's family."""
        return f"{self.prefix}c:{{{customer_id}}}:{section}"

    async def _run(self, calls: Sequence[tuple[bool, Sequence[bytes | str]]]) -> list[Any]:
        """EVALSHA each (is_apply, args) in one pipeline; reload scripts once if Redis lost them.

        Re-running a whole batch is safe: both scripts are idempotent.
        """
        for attempt in (1, 2):
            apply_sha, ack_sha = await self._shas()
            pipe = self.redis.pipeline(transaction=False)
            for is_apply, args in calls:
                pipe.evalsha(apply_sha if is_apply else ack_sha, 0, self.prefix, *args)
            try:
                return list(await pipe.execute())
            except NoScriptError:
                if attempt == 2:
                    raise
                await self._load_scripts()
        raise AssertionError("unreachable")

    async def apply(self, deltas: Sequence[bytes]) -> list[ApplyResult]:
        if not deltas:
            return []
        answers = await self._run([(True, (delta,)) for delta in deltas])
        return [ApplyResult.from_json(answer) for answer in answers]

    async def confirm_delivered(self, applied: Sequence[tuple[str, str]]) -> None:
        by_customer: dict[str, list[str]] = defaultdict(list)
        for customer_id, event_id in applied:
            by_customer[customer_id].append(event_id)
        if by_customer:
            await self._run([(False, (cid, *eids)) for cid, eids in by_customer.items()])

    async def resolve(self, identifier_key: str) -> str | None:
        found: bytes | None = await self.redis.get(f"{self.prefix}idx:{identifier_key}")
        return found.decode("utf-8") if found else None

    async def follow(self, customer_id: str) -> str | None:
        current = customer_id
        for _ in range(16):
            nxt: bytes | None = await self.redis.get(self.key(current, "redirect"))
            if not nxt:
                break
            current = nxt.decode("utf-8")
        return current if await self.redis.exists(self.key(current, "meta")) else None

    async def load(self, customer_id: str) -> StoredState | None:
        pipe = self.redis.pipeline(transaction=True)
        for section in FAMILY_SECTIONS:
            pipe.hgetall(self.key(customer_id, section))
        pipe.smembers(self.key(customer_id, "ids"))
        *sections, ids = await pipe.execute()
        if not sections[0]:
            return None
        state = empty_state()
        for name, values in zip(FAMILY_SECTIONS, sections, strict=True):
            state[name] = {  # type: ignore[literal-required]
                k.decode("utf-8"): v.decode("utf-8") for k, v in values.items()
            }
        state["ids"] = sorted(i.decode("utf-8") for i in ids)
        return state

    async def ping(self) -> bool:
        """True when Redis answers."""
        return bool(await self.redis.ping())

    async def close(self) -> None:
        await self.redis.aclose()
