"""The profile store on a Redis Cluster: every script call touches one hash slot.

A customer's keys share the hash tag ``{customer id}``, so an event that finds one person
is one call of the state script on that person's slot, as on a standalone Redis. What
spans slots — the identity index, merges, account links, erasure and the global
counters — is a protocol of single-slot steps run from here. Each step is idempotent and
leaves a mark the next step (or the next worker, or a redelivery) completes from:

1. **Resolve**: read each identifier's index entry (``{P}{INDEX}<id>``) and suppression entry
   (``{P}{SUPPRESSION}<hash>``) in one round trip; the identity rules find the people the event
   joins. The rules are the state script's alone (``resolve`` in ``apply_event.lua``),
   asked through its ``rule`` step with what was read here (:meth:`ClusterBase._resolve`);
   so are the survivor, erasure and suppression rules below.
2. **Claim** each new identifier with ``SET NX``; a claim lost to another worker starts
   the event again (it now finds that worker's person). After a claim the suppression
   entries are read again: an erasure that finished in between wins (the claims are
   released and the event is dropped as the erased person's), so erased stays erased.
3. **Merge** (two or more people; rare), under the merge lock ``{P}lock:merge`` with a
   fencing token from ``{P}lock:fence``: *fence* the survivor (earliest first seen, ties
   the smaller id: the script's ``survivor_of``; a newer token's fence stops an older
   lock holder), *seal* each loser
   (its ``redirect`` is set in the same call that answers its whole state as a dump, so
   nothing applies to it any more: an event that reaches it answers ``moved`` and is
   resolved again), *absorb* the dumps into the survivor in the event's own call (once
   per seal: the survivor's ``absorbed`` set), then re-point the loser's index entries
   (compare and set), move its account links, point the people it had absorbed at the
   survivor and *drop* its keys but the redirect.
4. **Apply** the event on the survivor's slot (one call; ``moved`` → back to 1). The
   account links it names and their versions are each one call on the account's slot,
   once per event (the account's processed ids); the accounts' states and people the
   answer shows are read then and kept beside the event's pending outputs (a
   redelivery re-emits them as they were). A chunk reads every event's owners in
   one pipeline first; *plain* events (every identifier already one person's: steps 2
   and 3 have nothing to do; no account named) send their calls to all nodes in one
   pipeline, the others run the steps alone in between
   (:meth:`ClusterProfileStore._chunk`). A crash with a pipeline half applied leaves
   what a crash between two events leaves.
5. **Global counters**: the call keeps the event's increments (product statistics, trend
   counts, spend-population moves) with the customer (``gq``) and answers them; one call
   per stripe and chunk adds them to the stripe of the event id, once per id, then they
   are forgotten. A crash in between re-sends them from ``gq`` on redelivery.

What each crash point leaves, and who completes it:

- after a claim, before the apply: the index names a person that lacks the identifier;
  the redelivered event resolves to that person and adds it;
- after a seal, before the absorb: the loser has a redirect and still its data — any
  later resolution that meets it (a ``moved`` answer, or an owner with a redirect)
  completes the merge: seal again (answers the same dump and seal id), absorb into the
  end of the redirect chain, re-point, drop;
- after the absorb, before the drop: the same, and the absorb is skipped (``absorbed``);
- after the apply, before the counters or the links: the redelivered event is a
  duplicate whose answer carries the kept increments again; links are idempotent;
- an erasure (under the same lock): suppression first, then everything that points at
  the person (index entries, accounts, agents, the redirects of people it absorbed, its
  spend), its own keys last, the tombstone after — so a redelivery finds what is left.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Self

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from portrait import metrics
from portrait.config import Settings
from processors.accounts import AccountState
from processors.layout import (
    ACCOUNT_ENTITY,
    FIRST_SEEN,
    IDS_KEY,
    INDEX,
    KEPT_GLOBALS_KEY,
    PRODUCT_STATS,
    PROFILE_KEY,
    SPEND_POPULATION,
    STRIPE,
    SUPPRESSION,
    global_bases,
)
from processors.layout import RECORD_SEP as RS
from state.answers import (
    Applied,
    ApplyResult,
    Duplicate,
    Erased,
    Failed,
    RedisUnwell,
    StaleOffsets,
    Suppressed,
    text_of,
)
from state.store import RedisProfileStore

STEP_FIELDS = (
    # a step of the protocol: which, on whom, by whom
    "op",
    "cid",
    "acct",
    "agent",
    "id",
    "from",
    "to",
    "into",
    "token",
    "stripe",
    "items",
    "h",
    "ttl",
    "all",
    # what the store decided for an event's own call
    "survivor",
    "usable",
    "rejections",
    "absorb",
    "later",
    # a rule's inputs (``RULES`` in the script)
    "rule",
    "events",
    "found",
    "first_seen",
    "people",
    "erasure",
    "owners",
    "account_people",
)
"""Fields the cluster protocol adds to a delta, or sends alone, for the state script's
steps (a test checks the script reads no other field than these and the delta's own)."""
ATTEMPTS = 12
"""Times an event is resolved again (a lost claim, a moved person) before the batch fails."""
LOCK_MS = 10_000
UNKNOWN_POSITION = -1
"""Generation and offset of a position a copy lacks: before everything."""


Resolution = tuple[list[str], list[str], list[str]]
"""The people an event joins, the identifiers it may use, its rejections (``kind US
reason``): the state script's ``resolve``, asked through its ``rule`` step."""


def one_owner(ids: Sequence[str], owner: Mapping[str, str]) -> str | None:
    """The person every identifier already belongs to, if one does: the state script's
    ``resolve`` answers that person and every identifier without checking anything, so
    no rule needs asking."""
    first = owner.get(ids[0]) if ids else None
    return first if first is not None and all(owner.get(i) == first for i in ids) else None


def stripe_of(once: str, stripes: int) -> str:
    return f"{STRIPE}{binascii.crc32(once.encode('utf-8')) % stripes}"


class Restart(Exception):
    """The event must be resolved again (a claim lost, a person moved or sealed)."""


class _Cluster(RedisCluster):
    """redis-py's cluster client, routing FCALL by its first key as it routes EVALSHA.

    redis-py 8.1 finds FCALL's keys with a COMMAND GETKEYS round trip per call (FCALL's
    keys are "movable"); FCALL's arguments are laid out as EVALSHA's (name, numkeys,
    keys...), so the first key names the slot without asking.
    """

    async def _determine_slot(self, command: str, *args: Any) -> int:
        if command.upper() == "FCALL" and len(args) > 2 and int(args[1]) > 0:
            return int(self.keyslot(args[2]))
        return int(await super()._determine_slot(command, *args))


class ClusterBase(RedisProfileStore):
    """What every step of the cluster protocol uses: the connection, one script call on
    one slot, the script's rules, the merge lock, the owners' reads and the global
    counters. The steps are in ``chunk.py``, ``merge.py``, ``erasure.py`` and
    ``accounts.py``; ``store.py`` puts them together."""

    def __init__(self, url: str, prefix: str = "portrait:", *, stripes: int = 8, **kw: Any):
        self.stripes = stripes
        super().__init__(url, prefix, **kw)
        if self.durability.mode != "none":
            raise ValueError("PORTRAIT_REDIS_DURABILITY must be none on a Redis Cluster")
        self._token: int | None = None  # the merge lock's fencing token while held
        self.lock_ms = LOCK_MS  # how long a lock outlives a holder that died with it
        # the latest event's clock and retention: the processed-id strings are kept per
        # retention epoch of that clock, so every step of an event reads the same ones
        self.retention_ms = 7 * 86_400_000
        self.now_ms = clock_ms()

    @classmethod
    def for_settings(cls, settings: Settings) -> Self:
        return cls(
            settings.redis_url,
            settings.redis_key_prefix,
            stripes=settings.redis_global_stripes,
            **cls._settings_options(settings),
        )

    def _connect(self, url: str, options: dict[str, Any]) -> tuple[Any, Any]:
        client = _Cluster.from_url(url, decode_responses=False, **options)
        return client, client

    def _extra_options(self) -> dict[str, Any]:
        return {"cluster": True}

    def _reads(self) -> Any:
        """Plain pipelines: redis-py's cluster transactions fail on some read replies
        (8.1: a response callback rejects ``keys``), so an entity's reads are not one
        snapshot here (each script call still is)."""
        return self.redis.pipeline(transaction=False)

    async def _call(self, route: str, *args: bytes | str, positions: bytes | str = b"") -> Any:
        """The state script on the slot of ``route`` (its first key names the slot)."""
        started = time.perf_counter()
        try:
            answer = await self._apply.call(
                self.redis, (route,), (self.prefix, self._script_options, positions, *args)
            )
        except ResponseError as error:
            raise StaleOffsets.of(error) or error from None
        metrics.REDIS_SECONDS.labels("apply").observe(time.perf_counter() - started)
        return answer

    async def _op(self, route: str, **step: Any) -> str:
        """One cluster step of the state script (``cluster_op``); its text answer."""
        [answer] = await self._call(route, orjson.dumps(step))
        return text_of(answer)

    async def _on_account(self, op: str, acct: str, person: str, ret: int, **extra: Any) -> str:
        """A step on an account's slot (``link``, ``unlink``) for one person."""
        return await self._op(
            self.key(ACCOUNT_ENTITY + acct, PROFILE_KEY),
            op=op,
            acct=acct,
            cid=person,
            now=self.now_ms,
            ret=ret,
            **extra,
        )

    def _idx(self, identifier: str) -> str:
        return f"{self.prefix}{INDEX}{identifier}"

    def _sup(self, hashed: str) -> str:
        return f"{self.prefix}{SUPPRESSION}{hashed}"

    async def _resolve(
        self, ids: Sequence[str], owner: Mapping[str, str], held: Mapping[str, list[str]]
    ) -> Resolution:
        """The state script's identity rules over what this store read."""
        person = one_owner(ids, owner)
        if person is not None:
            return [person], list(ids), []
        event = {"ids": ids, "owner": owner, "held": held}
        [answer] = (await self._rule("resolve", self._idx(ids[0]), events=[event]))["answers"]
        return resolution_of(answer)

    async def _rule(self, rule: str, route: str, **inputs: Any) -> dict[str, Any]:
        """One of the state script's rules (``RULES`` in ``apply_event.lua``) over what
        this store read from other slots; ``route``: any key (the rule touches none)."""
        answer: dict[str, Any] = orjson.loads(await self._op(route, op="rule", rule=rule, **inputs))
        return answer

    async def _read_owners(self, d: Mapping[str, Any]) -> tuple[dict[str, str], int | None]:
        """Each identifier's person and the latest erasure among the event's identifier
        hashes, in one round trip."""
        [read] = await self._owners_of([d])
        return read if read is not None else ({}, None)

    async def _owners_of(
        self, events: Sequence[Mapping[str, Any] | None]
    ) -> list[tuple[dict[str, str], int | None] | None]:
        """:meth:`_read_owners` of every person event, in one pipeline (None for the
        others: unreadable, erasures, account-only events)."""
        pipe = self.redis.pipeline(transaction=False)
        asked: list[tuple[list[str], int] | None] = []
        for d in events:
            if d is None or d.get("erase") or not d.get("ids"):
                asked.append(None)
                continue
            ids, hashes = d["ids"], d.get("idh") or []
            for i in ids:
                pipe.get(self._idx(i))
            for h in hashes:
                pipe.get(self._sup(h))
            asked.append((ids, len(hashes)))
        values = iter(await pipe.execute() if any(asked) else [])
        reads: list[tuple[dict[str, str], int | None] | None] = []
        for item in asked:
            if item is None:
                reads.append(None)
                continue
            ids, count = item
            owned = [next(values) for _ in ids]
            owner = {i: text_of(v) for i, v in zip(ids, owned, strict=True) if v}
            erasures = [int(v) for v in (next(values) for _ in range(count)) if v]
            reads.append((owner, max(erasures) if erasures else None))
        return reads

    async def _held(self, people: Sequence[str]) -> dict[str, list[str]]:
        pipe = self.redis.pipeline(transaction=False)
        for person in people:
            pipe.smembers(self.key(person, IDS_KEY))
        return {
            p: [text_of(m) for m in ms] for p, ms in zip(people, await pipe.execute(), strict=True)
        }

    @contextlib.asynccontextmanager
    async def _locked(self) -> AsyncIterator[int]:
        """The merge lock for a block: taken if not held, released if taken here."""
        if self._token is not None:
            yield self._token
            return
        token = await self._lock()
        try:
            yield token
        finally:
            await self._unlock()

    async def _lock(self) -> int:
        """Take the merge lock; its fencing token (higher than every earlier one)."""
        if self._token is not None:
            return self._token
        token = int(await self.redis.incr(f"{self.prefix}lock:fence"))
        deadline = time.monotonic() + 3 * self.lock_ms / 1000
        lock = f"{self.prefix}lock:merge"
        while not await self.redis.set(lock, token, nx=True, px=self.lock_ms):
            if time.monotonic() > deadline:
                raise RedisUnwell("the merge lock stayed taken")
            await asyncio.sleep(0.01)
        self._token = token
        return token

    async def _unlock(self) -> None:
        if self._token is not None:
            await self.redis.eval(RELEASE_SCRIPT, 1, f"{self.prefix}lock:merge", self._token)
            self._token = None

    async def _first_seen(self, people: Sequence[str]) -> dict[str, int]:
        """Each person's first-seen time (ms), for those that have one."""
        pipe = self.redis.pipeline(transaction=False)
        for person in people:
            pipe.hget(self.key(person, PROFILE_KEY), FIRST_SEEN)
        seen = await pipe.execute() if people else []
        return {p: int(float(text_of(v))) for p, v in zip(people, seen, strict=True) if v}

    async def _count(self, kept: Sequence[tuple[str, str, str]], forget: bool = True) -> None:
        """Kept increments to their stripes (once per id each), then forgotten."""
        if not kept:
            return
        by_stripe: dict[str, list[Any]] = {}
        for _entity, once, text in kept:
            by_stripe.setdefault(stripe_of(once, self.stripes), []).append(
                [once, orjson.loads(text)]
            )
        now = self.now_ms
        for stripe, items in by_stripe.items():
            route = f"{self.prefix}{{{stripe}}}:stats:products"
            await self._op(
                route, op="globals", stripe=stripe, items=items, now=now, ret=self.retention_ms
            )
        if forget:
            pipe = self.redis.pipeline(transaction=False)
            for entity, once, _increments in kept:
                pipe.hdel(self.key(entity, KEPT_GLOBALS_KEY), once)
            await pipe.execute()

    def _bases(self) -> list[str]:
        return global_bases(self.prefix, self.stripes)

    async def product_stats(self) -> dict[str, str]:
        total: dict[str, int] = {}
        for base in self._bases():
            for name, value in (await self.redis.hgetall(f"{base}{PRODUCT_STATS}")).items():
                total[text_of(name)] = total.get(text_of(name), 0) + int(value)
        return {name: str(n) for name, n in total.items()}

    async def population(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for base in self._bases():
            for bucket, count in (await self.redis.hgetall(f"{base}{SPEND_POPULATION}")).items():
                total[text_of(bucket)] = total.get(text_of(bucket), 0) + int(count)
        return {bucket: n for bucket, n in total.items() if n}

    # --- what one step asks of another (defined where the step lives) ---------------

    async def _event(self, raw: bytes, kept: list[tuple[str, str, str]]) -> ApplyResult:
        raise NotImplementedError  # store.py

    async def _applied(
        self, answer: Any, step: dict[str, Any], person: str, kept: list[tuple[str, str, str]]
    ) -> ApplyResult:
        raise NotImplementedError  # store.py

    async def _claim(self, ids: Sequence[str], person: str) -> list[str]:
        raise NotImplementedError  # store.py

    async def _release(self, ids: Sequence[str], person: str) -> None:
        raise NotImplementedError  # store.py

    async def _apply_step(
        self,
        step: dict[str, Any],
        person: str,
        kept: list[tuple[str, str, str]],
        owned: Sequence[str] = (),
    ) -> ApplyResult:
        raise NotImplementedError  # store.py

    async def _erase_person(self, person: str, ts: int, ttl: int, d: Mapping[str, Any]) -> None:
        raise NotImplementedError  # erasure.py

    async def _suppressed(
        self, d: Mapping[str, Any], owner: Mapping[str, str], erasure: int
    ) -> ApplyResult:
        raise NotImplementedError  # erasure.py


def clock_ms() -> int:
    return int(time.time() * 1000)


RELEASE_SCRIPT = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)
FORGET_TOMB_SCRIPT = (
    "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('SET', KEYS[1], '', 'KEEPTTL') end "
    "return 1"
)


def parsed_delta(raw: bytes) -> dict[str, Any] | None:
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return d if isinstance(d, dict) else None


def failed(error: ResponseError) -> ApplyResult:
    """An event the script failed on; a slot error is the deployment's, not the event's."""
    message = str(error)
    if "non local key" in message or "CROSSSLOT" in message or "MOVED" in message:
        raise error
    return Failed("script_error")


def touch(
    touched: tuple[set[str], set[str]] | None,
    d: Mapping[str, Any] | None,
    read: tuple[dict[str, str], int | None] | None,
    result: ApplyResult | None,
) -> tuple[set[str], set[str]] | None:
    """What an event run alone may have changed in the identity index: its identifiers
    and the people it found, merged or erased (an erasure: anything)."""
    if touched is None or d is None:
        return touched
    if d.get("erase"):
        return None
    ids, people = touched
    ids.update(d.get("ids") or ())
    if read is not None:
        people.update(read[0].values())
    if isinstance(result, Applied):
        people.update(result.merged)
        people.add(result.customer_id)
    elif isinstance(result, Erased | Suppressed):
        people.update(result.erased)
    elif isinstance(result, Duplicate) and result.customer_id:
        people.add(result.customer_id)
    return ids, people


def pending_accounts(eid: str) -> str:
    """The field beside an event's pending outputs that keeps the account states its
    answer named (read from the accounts' slots after the call)."""
    return f"{eid}{RS}accounts"


def dump_states(states: Mapping[str, AccountState]) -> bytes:
    return orjson.dumps({a: [s.fields, s.people, list(s.notify)] for a, s in states.items()})


def load_states(raw: bytes) -> dict[str, AccountState]:
    return {a: AccountState(f, p, tuple(n)) for a, (f, p, n) in orjson.loads(raw).items()}


def resolution_of(answer: Mapping[str, Any]) -> Resolution:
    """A resolution as the script answers it (an empty list comes back as ``{}``)."""
    return (
        list(answer["found"] or []),
        list(answer["usable"] or []),
        list(answer["rejections"] or []),
    )
