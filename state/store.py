"""The profile store: one small interface, one Redis implementation.

Each event's update runs inside ``apply_event.lua``; a chunk of events is one call of it
(one round trip), and calls run in the order they were made. Outputs stay "pending" in
Redis until the worker confirms their delivery (``ack_outputs.lua``, one call per batch),
so an event redelivered after a crash re-emits them instead of losing them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any, Protocol, cast

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from portrait import metrics
from portrait.config import Settings
from processors.accounts import AccountState
from processors.document import StoredState, document_settings
from processors.identity import DEFAULT_LIMITS, IdentityRules
from processors.layout import (
    ACCOUNT_ENTITY,
    ACCOUNTS_KEY,
    AGENT,
    FAMILIES,
    IDS_KEY,
    INDEX,
    PEOPLE_KEY,
    PRODUCT_STATS,
    PROFILE_KEY,
    REDIRECT_KEY,
    REDIS_SETTINGS,
    ROLE,
    SPEND_POPULATION,
    entity_key,
    lua_constants,
)
from processors.needs import load_rules
from state.answers import (
    ApplyResult,
    StaleOffsets,
    family_fields,
    parse_answer,
    text_of,
)
from state.durability import Durability
from state.scripts import StateScript

LAYOUT_MARK = "--@LAYOUT@"


def _lua(name: str) -> str:
    """A state script's source, with the layout of ``processors/layout.py`` rendered in."""
    source = files("state").joinpath(name).read_text(encoding="utf-8")
    return source.replace(LAYOUT_MARK, lua_constants())


def watched_keywords(rules: Sequence[Mapping[str, Any]]) -> list[str]:
    """The keyword terms the needs rules ask about: the state script always answers
    their weights, so a rule holds whatever the term's rank."""
    terms = {term.lower() for rule in rules for term in rule.get("keywords_any", ())}
    return sorted(terms)


def redis_client(settings: Settings, *, sync: bool = False) -> Any:
    """A Redis client for these settings' URL, password and TLS: redis-py's cluster
    client on a Redis Cluster (``PORTRAIT_REDIS_CLUSTER``; single-key commands follow
    the slots, SCAN visits every primary), asyncio unless ``sync``."""
    import redis
    import redis.asyncio.cluster
    import redis.cluster

    if settings.redis_cluster:
        cluster = redis.cluster.RedisCluster if sync else redis.asyncio.cluster.RedisCluster
        return cluster.from_url(settings.redis_url, **settings.redis_options())
    plain = redis.Redis if sync else aioredis.Redis
    return plain.from_url(settings.redis_url, **settings.redis_options())


_NEWER_CONTACT = """
local at = tonumber(redis.call('HGET', KEYS[1], 'at') or '-1')
if tonumber(ARGV[1]) >= at then
  redis.call('HSET', KEYS[1], 'at', ARGV[1], 'customer_id', ARGV[2], 'ref', ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


@dataclass(frozen=True, slots=True)
class Contact:
    """An agent's call or chat with a customer: who, which call or conversation, when."""

    agent_id: str
    customer_id: str
    at_ms: int
    ref: str


_LOWER_OFFSETS = """
for i = 1, #ARGV, 2 do
  local stored = redis.call('HGET', KEYS[1], ARGV[i])
  local offset = stored and tonumber(string.match(stored, ':(%-?%d+)$'))
  local floor = tonumber(string.match(ARGV[i + 1], ':(%-?%d+)$'))
  if offset and offset > floor then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
"""


class ProfileStore(Protocol):
    """Where profiles live. Implementations must apply each delta atomically and idempotently."""

    async def apply(self, deltas: Sequence[bytes], positions: bytes = b"") -> list[ApplyResult]:
        """Apply deltas in order; one result per delta. ``positions``: the chunk's input
        positions (``streams/offsets.py``), checked and advanced with the state; raises
        :class:`StaleOffsets` (applying nothing) when they are not where expected."""
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

    async def accounts_of(self, customer_id: str) -> dict[str, AccountState]:
        """The accounts a person holds: number → state."""
        ...

    async def load_account(self, account_no: str) -> AccountState | None:
        """An account's state, or None when no account has this number."""
        ...

    async def population(self) -> dict[str, int]:
        """Customers per spend bucket (for ``indicators.wealth``)."""
        ...

    async def record_contacts(self, contacts: Sequence[Contact], ttl_seconds: int) -> None:
        """Note each agent's current customer (the latest contact wins)."""
        ...

    async def product_stats(self) -> dict[str, str]:
        """The phase × product feedback counters (``processors.assist.parse_stats``)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class RedisProfileStore:
    """:class:`ProfileStore` on Redis (standalone or one shard; keys hash-tagged per customer).

    Updates and confirmations go through one lock, in the order they were asked for, so
    a caller may start the next chunk's update before it has read the previous answer.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "portrait:",
        *,
        keywords_shown: int = 10,
        keywords_watched: Sequence[str] | None = None,
        identity_limits: Mapping[str, int] | None = None,
        durability: str = "none",
        durability_timeout_ms: int = 1000,
        **options: Any,
    ) -> None:
        """``keywords_shown``: the top-K the documents show; ``keywords_watched``: terms
        whose weights every answer carries (default: those of the default needs rules);
        ``identity_limits``: the most identifiers of each kind one person may hold
        (default: ``processors.identity.DEFAULT_LIMITS``); ``durability``: what
        :meth:`make_durable` waits for (``Settings.redis_durability``)."""
        self.prefix = prefix
        self.durability = Durability(durability, durability_timeout_ms)
        self.redis, self._writer = self._connect(url, options)
        watched = watched_keywords(load_rules()) if keywords_watched is None else keywords_watched
        self.limits = dict(DEFAULT_LIMITS if identity_limits is None else identity_limits)
        self._script_options = orjson.dumps(
            {
                "kw_shown": keywords_shown,
                "kw_watch": list(watched),
                "limits": self.limits,
                **self._extra_options(),
            }
        )
        self._apply = StateScript(_lua("apply_event.lua"))
        self._ack = StateScript(_lua("ack_outputs.lua"))
        self._order = asyncio.Lock()  # FIFO: updates reach Redis in submission order
        self._confirming: set[asyncio.Task[Any]] = set()

    def _connect(self, url: str, options: dict[str, Any]) -> tuple[Any, Any]:
        """The client for reads and the scripts' own single connection (WAIT and
        WAITAOF wait for the writes of the connection they are sent on)."""
        return (
            aioredis.Redis.from_url(url, decode_responses=False, **options),
            aioredis.Redis.from_url(
                url, decode_responses=False, single_connection_client=True, **options
            ),
        )

    def _extra_options(self) -> dict[str, Any]:
        return {}

    def _reads(self) -> Any:
        """A pipeline for the reads of one entity: a transaction, so they see one state."""
        return self.redis.pipeline(transaction=True)

    @classmethod
    def for_settings(cls, settings: Settings) -> RedisProfileStore:
        """The standalone store of these settings (URL, key prefix, password and TLS
        options); ``state.stores.store_for`` picks the cluster's when set."""
        return cls(settings.redis_url, settings.redis_key_prefix, **cls._settings_options(settings))

    @staticmethod
    def _settings_options(settings: Settings) -> dict[str, Any]:
        document = document_settings(settings)
        return {
            "keywords_shown": document.keywords_top_k,
            "keywords_watched": watched_keywords(document.needs_rules),
            "identity_limits": IdentityRules.load(settings.identity_file).limits,
            "durability": settings.redis_durability,
            "durability_timeout_ms": settings.redis_durability_timeout_ms,
            **settings.redis_options(),
        }

    def key(self, customer_id: str, section: str) -> str:
        """Key of one part of a customer's key family."""
        return entity_key(self.prefix, customer_id, section)

    async def _eval(self, is_apply: bool, args: Sequence[bytes | str]) -> Any:
        """One of the scripts (the state script as a Functions library: scripts.py).

        Calls run one at a time, in the order they were made. Re-running is safe: both
        scripts are idempotent.
        """
        async with self._order:
            started = time.perf_counter()
            try:
                if is_apply:
                    args = (self.prefix, self._script_options, *args)
                    answer = await self._apply.call(self._writer, (), args)
                else:
                    answer = await self._ack.call(self._writer, (), (self.prefix, *args))
            except ResponseError as error:
                raise StaleOffsets.of(error) or error from None
            operation = "apply" if is_apply else "confirm"
            metrics.REDIS_SECONDS.labels(operation).observe(time.perf_counter() - started)
            return answer

    async def apply(self, deltas: Sequence[bytes], positions: bytes = b"") -> list[ApplyResult]:
        if not deltas and not positions:
            return []
        answers = await self._eval(True, [positions, *deltas])
        return [parse_answer(answer) for answer in answers]

    async def confirm_delivered(self, applied: Sequence[tuple[str, str]]) -> None:
        """Queue the confirmation; it runs before any later :meth:`apply` of this store.

        Not awaited: a crash before it runs leaves pending entries that only a redelivery
        of the same events would re-emit, which at-least-once allows.
        """
        if applied:
            pairs = [value for pair in applied for value in pair]
            task = asyncio.ensure_future(self._eval(False, pairs))
            self._confirming.add(task)
            task.add_done_callback(self._confirming.discard)

    async def resolve(self, identifier_key: str) -> str | None:
        found = await self.redis.get(f"{self.prefix}{INDEX}{identifier_key}")
        return text_of(found) if found else None

    async def follow(self, customer_id: str) -> str | None:
        current = customer_id
        for _ in range(16):
            nxt = await self.redis.get(self.key(current, REDIRECT_KEY))
            if not nxt:
                break
            current = text_of(nxt)
        return current if await self.redis.exists(self.key(current, PROFILE_KEY)) else None

    async def load(self, customer_id: str) -> StoredState | None:
        """The profile hash and every family whole, as one flat map (the layout's
        prefixes), read in one transaction."""
        found = await self._entity(customer_id, IDS_KEY)
        if found is None:
            return None
        flat, ids = found
        return {"fields": flat, "ids": sorted(ids)}

    async def load_live(self, customer_id: str) -> tuple[str, StoredState, list[str]] | None:
        """The live customer an id names (merges followed), its state and the account
        numbers it holds: one round trip for an id that was never merged away (the API's
        look-up), one more per merge followed; None when there is no such customer."""
        current = customer_id
        for _ in range(16):
            pipe = self._reads()
            pipe.get(self.key(current, REDIRECT_KEY))
            self._queue_person(pipe, current)
            redirect, *person = await pipe.execute()
            if redirect:
                current = text_of(redirect)
                continue
            found = self._person(person)
            return (current, *found) if found is not None else None
        return None

    async def load_many(
        self, customer_ids: Sequence[str]
    ) -> dict[str, tuple[StoredState, list[str]] | None]:
        """Several customers' states and account numbers (no redirects followed), read in
        one transaction; None for an id with no profile."""
        pipe = self._reads()
        for cid in customer_ids:
            self._queue_person(pipe, cid)
        answers = await pipe.execute()
        width = 3 + len(FAMILIES)  # the reads _queue_person queues per person
        return {
            cid: self._person(answers[i * width : (i + 1) * width])
            for i, cid in enumerate(customer_ids)
        }

    def _queue_person(self, pipe: Any, customer_id: str) -> None:
        """Queue the reads of a person's state and account numbers (:meth:`_person`)."""
        pipe.hgetall(self.key(customer_id, PROFILE_KEY))
        pipe.smembers(self.key(customer_id, IDS_KEY))
        pipe.smembers(self.key(customer_id, ACCOUNTS_KEY))
        self._families(pipe, customer_id)

    def _person(self, answers: Sequence[Any]) -> tuple[StoredState, list[str]] | None:
        """A person's state and account numbers from the answers of :meth:`_queue_person`;
        None when there is no profile."""
        fields, ids, numbers, *families = answers
        if not fields:
            return None
        flat = {text_of(k): text_of(v) for k, v in fields.items()}
        flat.update(self._family_fields(families))
        state: StoredState = {"fields": flat, "ids": sorted(text_of(m) for m in ids)}
        return state, sorted(text_of(n) for n in numbers)

    async def _entity(self, entity: str, members: str) -> tuple[dict[str, str], list[str]] | None:
        """An entity's profile hash with its families as one flat map, and the members
        of its set ``members`` (``ids``, ``people``), in one transaction; None if absent."""
        pipe = self._reads()
        pipe.hgetall(self.key(entity, PROFILE_KEY))
        pipe.smembers(self.key(entity, members))
        self._families(pipe, entity)
        fields, found, *families = await pipe.execute()
        if not fields:
            return None
        flat = {text_of(k): text_of(v) for k, v in fields.items()}
        flat.update(self._family_fields(families))
        return flat, [text_of(m) for m in found]

    def _families(self, pipe: Any, entity: str) -> None:
        for family in FAMILIES:
            key = self.key(entity, family.key)
            if family.keep == "since_calm":
                pipe.zcard(key)
            elif family.keep == "heaviest":
                pipe.zrange(key, 0, -1, withscores=True, score_cast_func=text_of)
            else:
                pipe.zrange(key, 0, -1)

    @staticmethod
    def _family_fields(families: Sequence[Any]) -> dict[str, str]:
        flat: dict[str, str] = {}
        for family, members in zip(FAMILIES, families, strict=True):
            if family.keep == "since_calm":
                members = [str(members)]
            elif family.keep == "heaviest":
                members = [x for pair in members for x in pair]
            flat.update(family_fields(family, members))
        return flat

    async def accounts_of(
        self, customer_id: str, numbers: Sequence[str] | None = None
    ) -> dict[str, AccountState]:
        """The accounts a person holds (``numbers``, when already read): number → hash
        and people."""
        if numbers is None:
            held = await self.redis.smembers(self.key(customer_id, ACCOUNTS_KEY))
            numbers = sorted(text_of(n) for n in held)
        found = [await self.load_account(number) for number in numbers]
        return {n: a for n, a in zip(numbers, found, strict=True) if a is not None}

    async def load_account(self, account_no: str) -> AccountState | None:
        """An account's hash (with its behaviour trail) and people with their role
        registers, or None when no account has this number."""
        found = await self._entity(ACCOUNT_ENTITY + account_no, PEOPLE_KEY)
        if found is None:
            return None
        flat, people = found
        role_field = f"{ROLE}{account_no}"
        roles = {}
        for person in sorted(people):
            role = await self.redis.hget(self.key(person, PROFILE_KEY), role_field)
            roles[person] = text_of(role) if role else ""
        return AccountState(flat, roles)

    async def record_contacts(self, contacts: Sequence[Contact], ttl_seconds: int) -> None:
        """Each agent's current customer: the contact that occurred last wins (an older
        one arriving late changes nothing); one key per agent, kept ``ttl_seconds``."""
        if not contacts:
            return
        latest: dict[str, Contact] = {}  # one script call per agent: its newest contact
        for contact in contacts:
            if contact.agent_id not in latest or contact.at_ms >= latest[contact.agent_id].at_ms:
                latest[contact.agent_id] = contact
        pipe = self.redis.pipeline(transaction=False)
        for contact in latest.values():
            pipe.eval(
                _NEWER_CONTACT,
                1,
                f"{self.prefix}{AGENT}{{{contact.agent_id}}}",
                contact.at_ms,
                contact.customer_id,
                contact.ref,
                ttl_seconds,
            )
        await pipe.execute()

    async def current_contact(self, agent_id: str) -> Contact | None:
        """The agent's current customer, or None."""
        found = await self.redis.hgetall(f"{self.prefix}{AGENT}{{{agent_id}}}")
        if not found:
            return None
        values = {text_of(k): text_of(v) for k, v in found.items()}
        return Contact(agent_id, values["customer_id"], int(values["at"]), values.get("ref", ""))

    async def product_stats(self) -> dict[str, str]:
        """The phase × product feedback counters (``processors.assist.parse_stats``)."""
        raw = await self.redis.hgetall(f"{self.prefix}{PRODUCT_STATS}")
        return {text_of(name): text_of(value) for name, value in raw.items()}

    async def population(self) -> dict[str, int]:
        counts = await self.redis.hgetall(f"{self.prefix}{SPEND_POPULATION}")
        # buckets emptied again are left out, as the cluster store's sum leaves them
        return {text_of(bucket): int(count) for bucket, count in counts.items() if int(count)}

    async def positions(self, key: str) -> dict[str, str]:
        """Every partition's stored position in an offsets hash (``streams/offsets.py``)."""
        return {text_of(k): text_of(v) for k, v in (await self.redis.hgetall(key)).items()}

    async def set_positions(self, key: str, positions: Mapping[str, str]) -> None:
        if positions:
            await self.redis.hset(key, mapping=cast(Any, dict(positions)))

    async def lower_positions(self, key: str, floors: Mapping[str, str]) -> None:
        """Set each position to its floor where the stored one is past it."""
        if floors:
            pairs = [item for pair in floors.items() for item in pair]
            await self.redis.eval(_LOWER_OFFSETS, 1, key, *pairs)

    async def make_durable(self) -> None:
        """Wait until what this connection wrote is as durable as configured; raises
        :class:`RedisUnwell` (the batch is retried) when it is not within the timeout."""
        if self.durability.mode == "none":
            return
        async with self._order:  # after the writes queued before it
            await self.durability.wait(self._writer)

    async def durable(self) -> bool:
        """Whether the configured durability can be met now (``/readyz``)."""
        return await self.durability.possible(self.redis)

    async def ping(self) -> bool:
        """True when Redis answers."""
        return bool(await self.redis.ping())

    async def untuned_settings(self) -> dict[str, str]:
        """The server settings the layout is sized for (``processors.layout.
        REDIS_SETTINGS``) that this Redis has otherwise: name → its value. Empty where
        ``CONFIG GET`` is refused (a managed Redis): nothing to say then."""
        try:
            found = await self.redis.config_get(*REDIS_SETTINGS)
            values = {text_of(k): text_of(v) for k, v in found.items()}
        except Exception:  # CONFIG disabled or renamed: the settings cannot be read
            return {}
        return {
            name: values[name]
            for name, wanted in REDIS_SETTINGS.items()
            if name in values and values[name] != wanted
        }

    async def close(self) -> None:
        if self._confirming:
            await asyncio.gather(*self._confirming, return_exceptions=True)
        await self._writer.aclose()
        await self.redis.aclose()
