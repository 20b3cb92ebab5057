"""The profile store on a Redis Cluster: every script call touches one hash slot.

A customer's keys share the hash tag ``{customer id}``, so an event that finds one person
is one call of the state script on that person's slot, as on a standalone Redis. What
spans slots — the identity index, merges, account links, erasure and the global
counters — is a protocol of single-slot steps run from here. Each step is idempotent and
leaves a mark the next step (or the next worker, or a redelivery) completes from:

1. **Resolve**: read each identifier's index entry (``{P}idx:<id>``) and suppression entry
   (``{P}sup:<hash>``) in one round trip; apply the identity rules
   (:func:`resolve`, the state script's rules) to find the people the event joins.
2. **Claim** each new identifier with ``SET NX``; a claim lost to another worker starts
   the event again (it now finds that worker's person). After a claim the suppression
   entries are read again: an erasure that finished in between wins (the claims are
   released and the event is dropped as the erased person's), so erased stays erased.
3. **Merge** (two or more people; rare), under the merge lock ``{P}lock:merge`` with a
   fencing token from ``{P}lock:fence``: *fence* the survivor (earliest first seen, ties
   the smaller id; a newer token's fence stops an older lock holder), *seal* each loser
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
from typing import Any

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from portrait import metrics
from portrait.config import Settings
from processors.accounts import AccountState
from processors.document import sections_of
from processors.layout import ACCOUNT_ENTITY, ROLE, STRIPE, global_bases
from processors.layout import ENTITY_SEP as ES
from processors.layout import RECORD_SEP as RS
from processors.layout import UNIT_SEP as US
from processors.relationships import connected_employees
from state.store import (
    ApplyResult,
    RedisProfileStore,
    RedisUnwell,
    StaleOffsets,
    _text,
    parse_position,
)

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


class ClusterProfileStore(RedisProfileStore):
    """:class:`~state.store.ProfileStore` on a Redis Cluster (module docstring)."""

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
        self.now_ms = _now()

    @classmethod
    def for_settings(cls, settings: Settings) -> ClusterProfileStore:
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

    # --- one script call on one slot ------------------------------------------------

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
        return _text(answer)

    async def _on_account(self, op: str, acct: str, person: str, ret: int, **extra: Any) -> str:
        """A step on an account's slot (``link``, ``unlink``) for one person."""
        return await self._op(
            self.key(ACCOUNT_ENTITY + acct, "p"),
            op=op,
            acct=acct,
            cid=person,
            now=self.now_ms,
            ret=ret,
            **extra,
        )

    def _idx(self, identifier: str) -> str:
        return f"{self.prefix}idx:{identifier}"

    def _sup(self, hashed: str) -> str:
        return f"{self.prefix}sup:{hashed}"

    # --- apply ------------------------------------------------------------------------

    async def apply(self, deltas: Sequence[bytes], positions: bytes = b"") -> list[ApplyResult]:
        if not deltas and not positions:
            return []
        async with self._order:
            plan: dict[str, Any] = orjson.loads(positions) if positions else {}
            copies = await self._copies(plan["key"]) if plan else []
            for copy in copies:  # every copy holds what this worker expects
                await self._call(copy, positions=orjson.dumps({**plan, "key": copy, "check": 1}))
            kept: list[tuple[str, str, str]] = []  # (entity, once id, increments)
            results = await self._chunk(deltas, kept)
            await self._count(kept)
            for copy in copies:  # after the chunk's writes on that node
                await self._call(copy, positions=orjson.dumps({**plan, "key": copy}))
        return results

    # --- input positions: a copy on every node --------------------------------------

    async def _copies(self, key: str) -> list[str]:
        """The offsets hash's copies, one on each primary node (the hash tag
        ``{~n<k>}`` of the lowest k whose slot the node serves). A node is written in
        order, so a node whose AOF loses its last second (a host crash) loses its
        copy's advance with its own state; the lowest copy is Redis's position
        (:meth:`positions`) and the events from there are applied again — duplicates
        on the nodes that kept them, new on the node that lost them."""
        await self.redis.initialize()
        nodes = {node.name for node in self.redis.get_primaries()}
        tags: dict[str, str] = {}
        for k in range(4096):
            tag = f"~n{k}"
            node = self.redis.nodes_manager.get_node_from_slot(self.redis.keyslot(tag))
            tags.setdefault(node.name, tag)
            if len(tags) == len(nodes):
                break
        return [f"{key}{{{tag}}}" for tag in sorted(tags.values())]

    async def positions(self, key: str) -> dict[str, str]:
        """The lowest of the copies' positions per partition; a partition missing from a
        copy that exists is at the start (a copy that does not exist yet — a node that
        never held one — tells nothing)."""
        pipe = self.redis.pipeline(transaction=False)
        for copy in await self._copies(key):
            pipe.hgetall(copy)
        held = [
            {_text(k): _text(v) for k, v in found.items()}
            for found in await pipe.execute()
            if found
        ]
        lowest: dict[str, str] = {}
        for name in {name for copy in held for name in copy}:
            start = f"{UNKNOWN_POSITION}:{UNKNOWN_POSITION}"
            lowest[name] = min(
                (copy.get(name, start) for copy in held),
                key=lambda text: parse_position(text) or (UNKNOWN_POSITION, UNKNOWN_POSITION),
            )
        return lowest

    async def set_positions(self, key: str, positions: Mapping[str, str]) -> None:
        for copy in await self._copies(key):
            await super().set_positions(copy, positions)

    async def lower_positions(self, key: str, floors: Mapping[str, str]) -> None:
        for copy in await self._copies(key):
            await super().lower_positions(copy, floors)

    # --- a chunk: the events of people already known go out together -----------------

    async def _chunk(
        self, deltas: Sequence[bytes], kept: list[tuple[str, str, str]]
    ) -> list[ApplyResult]:
        """Each delta's result, in order.

        An event whose identifiers all belong to one person already (no claim, no merge,
        no erasure in its way, no account named: most events of a long-lived deployment)
        is *plain*: its call waits in a batch that goes to every node in one pipeline
        (each node applies its share back to back; one person's events stay in order on
        its one slot). So is a *fresh* event, whose identifiers no one holds (a new
        customer): its claims go out in one pipeline for the batch before the calls
        (:meth:`_claim_fresh`), and its identifiers and person count as touched. Any
        other event sends the batch first and then runs the protocol alone; the owners
        read for the chunk are not trusted afterwards for the identifiers and people it
        touched (after an erasure they are read again). A plain call that fails or finds
        its person moved, and a fresh one that loses a claim, runs the protocol alone too.
        """
        parsed = [_parsed(raw) for raw in deltas]
        owners = await self._owners_of(parsed)
        fresh = await self._fresh_resolutions(parsed, owners)
        results: list[ApplyResult | None] = [None] * len(deltas)
        batch: list[tuple[int, dict[str, Any]]] = []
        touched: tuple[set[str], set[str]] | None = (set(), set())  # (identifiers, people)
        batched: set[str] = set()  # the people of the batch's plain calls
        for n, d in enumerate(parsed):
            if d is not None:
                self.retention_ms = int(d.get("ret") or self.retention_ms)
                self.now_ms = int(d.get("now") or self.now_ms)
            step = self._plain(d, owners[n], touched, fresh.get(n))
            if step is not None and step.get("survivor") is not None:
                batched.add(step["survivor"])
                batch.append((n, step))
                continue
            if step is not None and touched is not None and step["newcid"] not in batched:
                touched[0].update(step["ids"])
                touched[1].add(step["newcid"])
                batch.append((n, step))
                continue
            await self._send(batch, deltas, results, kept)
            batch, batched = [], set()
            results[n] = await self._event(deltas[n], kept)
            touched = _touch(touched, d, owners[n], results[n])
            if touched is None:  # an erasure: the rest of the chunk's owners read again
                owners[n + 1 :] = await self._owners_of(parsed[n + 1 :])
                touched = (set(), set())
        await self._send(batch, deltas, results, kept)
        return [r if r is not None else ApplyResult("error", error="script_error") for r in results]

    def _plain(
        self,
        d: dict[str, Any] | None,
        read: tuple[dict[str, str], int | None] | None,
        touched: tuple[set[str], set[str]] | None,
        fresh: Resolution | None,
    ) -> dict[str, Any] | None:
        """The event's call if it is plain (with its ``survivor``) or fresh (without, its
        resolution asked for the chunk: ``fresh``), else None (:meth:`_chunk`)."""
        if d is None or read is None or touched is None:
            return None
        owner, erasure = read
        ids = d["ids"]
        if d.get("accts"):  # its links and the accounts' answer follow the call at once
            return None
        if erasure is not None and d["ts"] < erasure:
            return None
        people = set(owner.values())
        if not touched[0].isdisjoint(ids) or not touched[1].isdisjoint(people):
            return None
        if not owner:  # fresh: a new person, its identifiers claimed before the call
            if d["newcid"] in touched[1] or fresh is None:
                return None
            _found, usable, rejections = fresh
            return {**d, "usable": usable, "rejections": rejections}
        person = one_owner(ids, owner)
        if person is None:
            return None
        return {**d, "survivor": person, "usable": list(ids), "rejections": []}

    async def _fresh_resolutions(
        self,
        parsed: Sequence[dict[str, Any] | None],
        owners: Sequence[tuple[dict[str, str], int | None] | None],
    ) -> dict[int, Resolution]:
        """The resolution of each event whose identifiers no one holds, all asked in one
        call (a new customer's identifiers still meet the limits: two phones where one is
        allowed)."""
        asked = [
            (n, d["ids"])
            for n, (d, read) in enumerate(zip(parsed, owners, strict=True))
            if d is not None and read is not None and not read[0] and d.get("ids")
        ]
        if not asked:
            return {}
        answers = await self._rule(
            "resolve", self._idx(asked[0][1][0]), events=[{"ids": ids} for _n, ids in asked]
        )
        return {n: _resolution(a) for (n, _ids), a in zip(asked, answers["answers"], strict=True)}

    async def _resolve(
        self, ids: Sequence[str], owner: Mapping[str, str], held: Mapping[str, list[str]]
    ) -> Resolution:
        """The state script's identity rules over what this store read."""
        person = one_owner(ids, owner)
        if person is not None:
            return [person], list(ids), []
        event = {"ids": ids, "owner": owner, "held": held}
        [answer] = (await self._rule("resolve", self._idx(ids[0]), events=[event]))["answers"]
        return _resolution(answer)

    async def _rule(self, rule: str, route: str, **inputs: Any) -> dict[str, Any]:
        """One of the state script's rules (``RULES`` in ``apply_event.lua``) over what
        this store read from other slots; ``route``: any key (the rule touches none)."""
        answer: dict[str, Any] = orjson.loads(await self._op(route, op="rule", rule=rule, **inputs))
        return answer

    async def _send(
        self,
        batch: Sequence[tuple[int, dict[str, Any]]],
        deltas: Sequence[bytes],
        results: list[ApplyResult | None],
        kept: list[tuple[str, str, str]],
    ) -> None:
        """The calls of a batch in one pipeline (after the fresh events' claims), then
        what follows each; an event that lost a claim runs the protocol alone."""
        if not batch:
            return
        lost = await self._claim_fresh([(n, s) for n, s in batch if s.get("survivor") is None])
        sent = [(n, step, step.get("survivor") or step["newcid"]) for n, step in batch]
        sent = [item for item in sent if item[0] not in lost]
        started = time.perf_counter()
        replies = await self._pipelined(sent)
        if any(self._apply.missing(reply) for reply in replies):  # a node new to the script
            await self._apply.load(self.redis)
            again = [n for n, reply in enumerate(replies) if self._apply.missing(reply)]
            resent = await self._pipelined([sent[n] for n in again])
            for n, reply in zip(again, resent, strict=True):
                replies[n] = reply
        metrics.REDIS_SECONDS.labels("apply").observe(time.perf_counter() - started)
        for (n, step, person), reply in zip(sent, replies, strict=True):
            if not isinstance(reply, Exception):
                try:
                    results[n] = await self._applied(reply[0], step, person, kept)
                    continue
                except Restart:
                    metrics.CLUSTER_RESTARTS.inc()
                except ResponseError as error:
                    results[n] = _failed(error)
                    continue
            results[n] = await self._event(deltas[n], kept)  # the whole protocol, alone
        for n in sorted(lost):
            results[n] = await self._event(deltas[n], kept)

    async def _pipelined(self, sent: Sequence[tuple[int, dict[str, Any], str]]) -> list[Any]:
        """The calls of (index, step, person) in one pipeline: their answers or errors."""
        if not sent:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for _n, step, person in sent:
            args = (self.prefix, self._script_options, b"", orjson.dumps(step))
            self._apply.queue(pipe, (self.key(person, "p"),), args)
        return list(await pipe.execute(raise_on_error=False))

    async def _claim_fresh(self, fresh: Sequence[tuple[int, dict[str, Any]]]) -> set[int]:
        """The claims of a batch's fresh events (:meth:`_claim`'s ``SET NX``) in one
        pipeline, then the erasures of the events that won them all in another (an
        erasure in between wins, as for an event alone); an event that lost a claim or
        meets an erasure releases what it won. Answers those events' indexes."""
        if not fresh:
            return set()
        pipe = self.redis.pipeline(transaction=False)
        for _n, step in fresh:
            for i in step["usable"]:
                pipe.set(self._idx(i), step["newcid"], nx=True)
        won = iter(await pipe.execute() if any(s["usable"] for _n, s in fresh) else [])
        lost: dict[int, list[str]] = {}
        for n, step in fresh:
            got = [i for i in step["usable"] if next(won)]
            if len(got) < len(step["usable"]):
                lost[n] = got
        held = [(n, step) for n, step in fresh if n not in lost]
        for (n, step), read in zip(held, await self._owners_of([s for _n, s in held]), strict=True):
            erasure = read[1] if read is not None else None
            if erasure is not None and step["ts"] < erasure:
                lost[n] = step["usable"]
        steps = dict(fresh)
        for n, got in lost.items():
            metrics.CLUSTER_RESTARTS.inc()
            await self._release(got, steps[n]["newcid"])
        return set(lost)

    async def _event(self, raw: bytes, kept: list[tuple[str, str, str]]) -> ApplyResult:
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return ApplyResult("error", error="malformed_delta")
        self.retention_ms = int(d.get("ret") or self.retention_ms)
        self.now_ms = int(d.get("now") or self.now_ms)
        try:
            if d.get("erase"):
                return await self._erase(d)
            if not d.get("ids"):
                return await self._accounts_event(d, kept)
            for _attempt in range(ATTEMPTS):
                try:
                    return await self._person_event(d, kept)
                except Restart:
                    metrics.CLUSTER_RESTARTS.inc()
                    await asyncio.sleep(0.005)
            raise RedisUnwell("an event did not settle on one person")
        except ResponseError as error:
            return _failed(error)

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
            owner = {i: _text(v) for i, v in zip(ids, owned, strict=True) if v}
            erasures = [int(v) for v in (next(values) for _ in range(count)) if v]
            reads.append((owner, max(erasures) if erasures else None))
        return reads

    async def _held(self, people: Sequence[str]) -> dict[str, list[str]]:
        pipe = self.redis.pipeline(transaction=False)
        for person in people:
            pipe.smembers(self.key(person, "ids"))
        return {
            p: [_text(m) for m in ms] for p, ms in zip(people, await pipe.execute(), strict=True)
        }

    async def _person_event(
        self, d: dict[str, Any], kept: list[tuple[str, str, str]]
    ) -> ApplyResult:
        owner, erasure = await self._read_owners(d)
        if erasure is not None and d["ts"] < erasure:
            return await self._suppressed(d, owner, erasure)
        distinct = list(dict.fromkeys(owner.values()))
        held = await self._held(distinct) if len(distinct) > 1 or len(owner) < len(d["ids"]) else {}
        found, usable, rejections = await self._resolve(d["ids"], owner, held)
        if len(found) > 1:
            return await self._merge_event(d, kept)
        survivor = found[0] if found else None
        claimed = await self._claim([i for i in usable if i not in owner], survivor or d["newcid"])
        if claimed:
            _owner, erasure = await self._read_owners(d)  # an erasure in between wins
            if erasure is not None and d["ts"] < erasure:
                await self._release(claimed, survivor or d["newcid"])
                raise Restart
        step = {**d, "survivor": survivor, "usable": usable, "rejections": rejections}
        # a person that turns out not to exist gives up these (those just claimed too)
        owned = [i for i, p in owner.items() if p == survivor] + claimed
        return await self._apply_step(step, survivor or d["newcid"], kept, owned)

    async def _claim(self, ids: Sequence[str], person: str) -> list[str]:
        """``SET NX`` each new identifier to the person; a lost claim releases the others
        and restarts the event."""
        if not ids:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for i in ids:
            pipe.set(self._idx(i), person, nx=True)
        won = await pipe.execute()
        if all(won):
            return list(ids)
        await self._release([i for i, ok in zip(ids, won, strict=True) if ok], person)
        raise Restart

    async def _release(self, ids: Sequence[str], person: str) -> None:
        for i in ids:
            await self._op(self._idx(i), op="index", id=i, **{"from": person})

    async def _apply_step(
        self,
        step: dict[str, Any],
        person: str,
        kept: list[tuple[str, str, str]],
        owned: Sequence[str] = (),
    ) -> ApplyResult:
        """The event's call on the person's slot; ``moved`` restarts it."""
        if step.get("survivor") is None:  # the script's JSON null would read as true
            step = {k: v for k, v in step.items() if k != "survivor"}
        [reply] = await self._call(self.key(person, "p"), orjson.dumps(step))
        return await self._applied(reply, step, person, kept, owned)

    async def _applied(
        self,
        reply: Any,
        step: Mapping[str, Any],
        person: str,
        kept: list[tuple[str, str, str]],
        owned: Sequence[str] = (),
    ) -> ApplyResult:
        """What follows an event's call: its increments kept for the stripes, the account
        links, the merge's last steps, the accounts of the answer; ``moved`` settles the
        person's identifiers and restarts the event."""
        if isinstance(reply, bytes):  # the script failed on this event's data
            return ApplyResult.parse(reply)
        answer, increments = _text(reply[0]), _text(reply[1])
        if answer == "moved":
            await self._settle(person, owned)
            raise Restart
        result = ApplyResult.parse(answer.encode("utf-8"))
        # a duplicate names the customer it was first applied to (its outputs as they
        # were); the links and the kept increments are the live person's
        entity = person
        if increments:
            kept.append((entity, step["eid"], increments))
        if result.status in ("ok", "dup"):  # again on a redelivery: once per event each
            for acct in step.get("accts") or []:
                await self._on_account("link", acct, entity, step["ret"], eid=step["eid"])
        if step.get("absorb"):
            await self._after_merge(entity, step["absorb"], kept)
            metrics.CLUSTER_MERGES.labels("event").inc(len(step["absorb"]))
        await self._fill_person(result, step, entity)
        return result

    # --- merges ---------------------------------------------------------------------

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
            await self.redis.eval(_RELEASE, 1, f"{self.prefix}lock:merge", self._token)
            self._token = None

    async def _first_seen(self, people: Sequence[str]) -> dict[str, int]:
        """Each person's first-seen time (ms), for those that have one."""
        pipe = self.redis.pipeline(transaction=False)
        for person in people:
            pipe.hget(self.key(person, "p"), "m:first_seen")
        seen = await pipe.execute() if people else []
        return {p: int(float(_text(v))) for p, v in zip(people, seen, strict=True) if v}

    async def _survivor(self, found: Sequence[str]) -> str | None:
        """The person the others merge into (the script's ``survivor_of``)."""
        if not found:
            return None
        firsts = await self._first_seen(found)
        answer = await self._rule(
            "survivor", self.key(found[0], "p"), found=found, first_seen=firsts
        )
        survivor: str = answer["survivor"]
        return survivor

    async def _live_owners(self, owner: dict[str, str]) -> dict[str, str]:
        """Owners with their merges followed; interrupted merges met on the way completed
        (the lock is held)."""
        out = {}
        for identifier, person in owner.items():
            await self._settle(person, [identifier])
            live = await self.follow(person)
            if live is not None:
                out[identifier] = live
        return out

    async def _settle(self, person: str, ids: Sequence[str]) -> None:
        """After a ``moved`` answer: complete the person's merge if it was interrupted,
        and point these identifiers at the end of its redirect chain (or at no one)."""
        pipe = self._reads()
        pipe.get(self.key(person, "redirect"))
        pipe.exists(self.key(person, "p"))
        redirect, has_data = await pipe.execute()
        if redirect and has_data:
            async with self._locked():
                await self._complete(person, _text(redirect))
        if redirect or not has_data:
            live = await self.follow(person)
            for i in ids:
                step = {"op": "index", "id": i, "from": person}
                if live is not None:
                    step["to"] = live
                await self._op(self._idx(i), **step)

    async def _complete(self, loser: str, into: str) -> None:
        """An interrupted merge of ``loser`` (sealed into ``into``) finished."""
        target = await self.follow(into)
        if target is None:
            return
        seal = await self._seal(loser, into)
        if seal is None:
            return
        answer = await self._op(
            self.key(target, "p"),
            op="absorb",
            survivor=target,
            absorb=[seal],
            now=self.now_ms,
            ret=seal["ret"],
        )
        if answer == "moved":
            raise Restart
        await self._after_merge(target, [seal], None)
        metrics.CLUSTER_MERGES.labels("completed").inc()

    async def _seal(self, loser: str, into: str) -> dict[str, Any] | None:
        """Seal a loser into a survivor: its dump and seal id, or None when it is gone
        (dropped already); a loser sealed into another restarts the event."""
        token = await self._lock()
        now, ret = self.now_ms, self.retention_ms
        answer = await self._op(
            self.key(loser, "p"), op="seal", cid=loser, into=into, token=token, now=now, ret=ret
        )
        kind, _, rest = answer.partition(RS)
        if kind == "gone":
            return None
        if kind == "fenced":
            raise RedisUnwell("a newer merge lock holder owns this customer")
        if kind != "dump":
            raise Restart
        seal_id, _, dump = rest.partition(RS)
        return {"cid": loser, "seal": seal_id, "dump": orjson.loads(dump), "ret": ret}

    async def _merge_event(
        self, d: dict[str, Any], kept: list[tuple[str, str, str]]
    ) -> ApplyResult:
        """An event that joins two or more people, under the merge lock."""
        async with self._locked() as token:
            owner, erasure = await self._read_owners(d)
            if erasure is not None and d["ts"] < erasure:
                return await self._suppressed(d, owner, erasure)
            owner = await self._live_owners(owner)
            distinct = list(dict.fromkeys(owner.values()))
            found, usable, rejections = await self._resolve(
                d["ids"], owner, await self._held(distinct)
            )
            survivor = await self._survivor(found)
            absorb = []
            if survivor is not None:
                fenced = await self._op(
                    self.key(survivor, "p"), op="fence", cid=survivor, token=token
                )
                if fenced != "ok":
                    raise Restart
                for loser in found:
                    if loser != survivor:
                        sealed = await self._seal(loser, survivor)
                        if sealed is not None:
                            absorb.append(sealed)
            target = survivor or d["newcid"]
            await self._claim([i for i in usable if i not in owner], target)
            step = {**d, "survivor": survivor, "usable": usable, "rejections": rejections}
            step["absorb"] = absorb
            return await self._apply_step(step, target, kept)

    async def _after_merge(
        self,
        survivor: str,
        absorbed: Sequence[Mapping[str, Any]],
        kept: list[tuple[str, str, str]] | None,
    ) -> None:
        """Re-point what named each absorbed loser at the survivor; drop the loser; send
        the merge's kept global increments to the stripes."""
        now = self.now_ms
        for a in absorbed:
            loser, dump = a["cid"], a["dump"]
            for i in dump.get("ids") or []:
                await self._op(self._idx(i), op="index", id=i, to=survivor, **{"from": loser})
            for acct in dump.get("accts") or []:
                await self._on_account("link", acct, survivor, a["ret"], **{"from": loser})
            for m in dump.get("merged") or []:
                await self.redis.set(self.key(m, "redirect"), survivor)
            await self._op(self.key(loser, "p"), op="drop", cid=loser, now=now, ret=a["ret"])
        merged_kept: list[tuple[str, str, str]] = []
        for a in absorbed:
            once = f"m:{a['cid']}|{a['seal']}"
            found = await self.redis.hget(self.key(survivor, "gq"), once)
            if found:
                merged_kept.append((survivor, once, _text(found)))
        if kept is None:
            await self._count(merged_kept)
        else:
            kept.extend(merged_kept)

    # --- erasure --------------------------------------------------------------------

    async def _suppress(self, hashes: Sequence[str], ts: int, ttl: int) -> None:
        for h in hashes:
            await self._op(self._sup(h), op="suppress", h=h, ts=ts, ttl=ttl)

    async def _suppressed(
        self, d: Mapping[str, Any], owner: Mapping[str, str], erasure: int
    ) -> ApplyResult:
        """An erased person's event from before the erasure: dropped; the people its
        identifiers find who were first seen before the erasure go the same way."""
        async with self._locked():
            ttl = max(int(d.get("supttl") or d["ret"]), 1)
            people = [live for p in dict.fromkeys(owner.values()) if (live := await self.follow(p))]
            answer = await self._rule(
                "suppressed",
                self._idx(d["ids"][0]),
                people=people,
                erasure=erasure,
                first_seen=await self._first_seen(people),
            )
            gone: list[str] = answer["gone"] or []
            await self._suppress(d.get("idh") or [], erasure, ttl)
            for person in gone:
                await self._erase_person(person, erasure, ttl, d)
        return ApplyResult("suppressed", erased=gone)

    async def _erase(self, d: Mapping[str, Any]) -> ApplyResult:
        """An erasure, under the merge lock; its tombstone written last."""
        tomb = f"{self.prefix}erasure:{d['eid']}"
        async with self._locked():
            done = await self.redis.get(tomb)
            if done is not None:
                erased = _text(done)
                return ApplyResult(
                    "dup", replay=ApplyResult("erased", erased=erased.split(US)) if erased else None
                )
            found: list[str] = []
            owners = {i: _text(v) for i in d["ids"] if (v := await self.redis.get(self._idx(i)))}
            account_people = [
                [
                    _text(m)
                    for m in await self.redis.smembers(self.key(ACCOUNT_ENTITY + a, "people"))
                ]
                for a in d.get("accts") or []
            ]
            answer = await self._rule(
                "erasure", tomb, ids=d["ids"], owners=owners, account_people=account_people
            )
            for person in answer["found"] or []:
                live = await self.follow(person)
                if live and live not in found:
                    found.append(live)
            ttl = max(int(d.get("supttl") or d["ret"]), 1)
            await self._suppress(d.get("idh") or [], d["ts"], ttl)
            for person in found:
                await self._erase_person(person, d["ts"], ttl, d)
            await self.redis.set(tomb, US.join(found), px=max(int(d["ret"]), 1))
        if not found:
            return ApplyResult("noop")
        return ApplyResult("erased", erased=found)

    async def _erase_person(self, person: str, ts: int, ttl: int, d: Mapping[str, Any]) -> None:
        """Everything that points at the person first, the person's keys last."""
        answer = await self._op(self.key(person, "p"), op="facts", cid=person)
        if not answer.startswith("facts" + RS):
            return
        facts = orjson.loads(answer[6:])
        now, ret = self.now_ms, int(d["ret"])
        await self._suppress(facts.get("idh") or [], ts, ttl)
        for i in facts.get("ids") or []:
            await self._op(self._idx(i), op="index", id=i, **{"from": person})
        for acct in facts.get("accts") or []:
            unlinked = await self._on_account("unlink", acct, person, ret)
            if RS in unlinked:  # the account went: out of the spend population too
                once = f"x:{ACCOUNT_ENTITY}{acct}:{d['eid']}"
                moved = unlinked.split(RS, 1)[1]
                await self._count([(ACCOUNT_ENTITY + acct, once, moved)], forget=False)
        for m in facts.get("merged") or []:
            await self.redis.delete(self.key(m, "redirect"))
        for agent in facts.get("agents") or []:
            await self._op(
                f"{self.prefix}agent:{{{agent}}}", op="forget_agent", agent=agent, cid=person
            )
        if facts.get("bucket"):
            once = f"x:{person}:{d['eid']}"
            await self._count(
                [(person, once, orjson.dumps({"spend": {facts["bucket"]: -1}}).decode())],
                forget=False,
            )
        await self._op(self.key(person, "p"), op="drop", cid=person, all=True, now=now, ret=ret)

    # --- accounts -------------------------------------------------------------------

    async def _accounts_event(
        self, d: dict[str, Any], kept: list[tuple[str, str, str]]
    ) -> ApplyResult:
        """An event with no person identifier: one call per account it names."""
        answers = []
        for n, acct in enumerate(d["accts"]):
            entity = ACCOUNT_ENTITY + acct
            step = {**d, "accts": [acct], "later": n > 0}
            [reply] = await self._call(self.key(entity, "p"), orjson.dumps(step))
            if isinstance(reply, bytes):
                return ApplyResult.parse(reply)
            if reply[1]:
                kept.append((entity, d["eid"], _text(reply[1])))
            answers.append(_text(reply[0]))
        if d.get("quiet"):
            return ApplyResult.parse(answers[0].encode("utf-8"))
        fresh = [a[5:] for a in answers if a.startswith("acct" + RS)]
        again = [a[9:] for a in answers if a.startswith(f"dup{RS}acct{RS}")]
        if fresh:
            text = f"acct{RS}" + ES.join(fresh + again)
        elif again:
            text = f"dup{RS}acct{RS}" + ES.join(again)
        else:
            text = answers[0]
        result = ApplyResult.parse(text.encode("utf-8"))
        await self._fill_accounts(result, d["eid"])
        return result

    async def _fill_accounts(self, result: ApplyResult, eid: str) -> None:
        """The people of each account an account-only event applied to (they live on
        other slots), kept beside the account's pending outputs for a redelivery."""
        for applied in result.applied_accounts:
            if applied.account_no is not None:
                applied.people, notify = await self._people_of(applied.account_no)
                applied.notify = notify
                key = self.key(ACCOUNT_ENTITY + applied.account_no, "pending")
                await self.redis.hset(
                    key, pending_accounts(eid), orjson.dumps([applied.people, notify])
                )
        for applied in result.replay.applied_accounts if result.replay else []:
            if applied.account_no is not None:
                key = self.key(ACCOUNT_ENTITY + applied.account_no, "pending")
                raw = await self.redis.hget(key, pending_accounts(eid))
                if raw:  # else the worker stopped between the call and the record
                    applied.people, applied.notify = orjson.loads(raw)
                else:
                    applied.people, applied.notify = await self._people_of(applied.account_no)

    async def _people_of(self, acct: str) -> tuple[dict[str, str], list[str]]:
        """An account's people with their role registers, and the employees connected to
        any of them (the script's ``people_of``)."""
        people = sorted(
            _text(p) for p in await self.redis.smembers(self.key(ACCOUNT_ENTITY + acct, "people"))
        )
        roles, notify = {}, set()
        for person in people:
            fields = {
                _text(k): _text(v)
                for k, v in (await self.redis.hgetall(self.key(person, "p"))).items()
            }
            roles[person] = fields.get(ROLE + acct, "")
            notify.update(connected_employees(sections_of(fields)["r"]))
        return roles, sorted(notify)

    async def _fill_person(self, result: ApplyResult, step: Mapping[str, Any], person: str) -> None:
        """The accounts a person's answer lists, with their hashes, and the people of those
        the event named (they live on other slots). Kept beside the event's pending
        outputs, so that a redelivery re-emits them as they were, not as they are."""
        kept = self.key(person, "pending"), pending_accounts(step["eid"])
        if result.status == "ok" and result.accounts:
            states = await self._account_states(result, step)
            result.accounts.update(states)
            await self.redis.hset(*kept, _dump_states(states))
        replay = result.replay
        if replay is not None and replay.status == "ok" and replay.accounts:
            raw = await self.redis.hget(*kept)
            # no record: the worker stopped between the call and the record
            replay.accounts.update(
                _load_states(raw) if raw else await self._account_states(replay, step)
            )

    async def _account_states(
        self, result: ApplyResult, step: Mapping[str, Any]
    ) -> dict[str, AccountState]:
        named = set(step.get("accts") or []) | set(result.links_added)
        states = {}
        for acct in result.accounts:
            raw = await self.redis.hgetall(self.key(ACCOUNT_ENTITY + acct, "p"))
            people: dict[str, str] = {}
            notify: list[str] = []
            if acct in named:
                people, notify = await self._people_of(acct)
            states[acct] = AccountState(
                {_text(k): _text(v) for k, v in raw.items()}, people, tuple(notify)
            )
        return states

    # --- global counters ------------------------------------------------------------

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
                pipe.hdel(self.key(entity, "gq"), once)
            await pipe.execute()

    def _bases(self) -> list[str]:
        return global_bases(self.prefix, self.stripes)

    async def product_stats(self) -> dict[str, str]:
        total: dict[str, int] = {}
        for base in self._bases():
            for name, value in (await self.redis.hgetall(f"{base}stats:products")).items():
                total[_text(name)] = total.get(_text(name), 0) + int(value)
        return {name: str(n) for name, n in total.items()}

    async def population(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for base in self._bases():
            for bucket, count in (await self.redis.hgetall(f"{base}pop:spend")).items():
                total[_text(bucket)] = total.get(_text(bucket), 0) + int(count)
        return {bucket: n for bucket, n in total.items() if n}

    # --- reads and confirmations ------------------------------------------------------

    async def confirm_delivered(self, applied: Sequence[tuple[str, str]]) -> None:
        if applied:
            task = asyncio.ensure_future(self._confirm(list(applied)))
            self._confirming.add(task)
            task.add_done_callback(self._confirming.discard)

    async def _confirm(self, applied: Sequence[tuple[str, str]]) -> None:
        """The pending outputs forgotten where they are now (merges followed): the
        erasure tombstones and each person's redirect in one pipeline, a redirect's
        target in another (rare), the forgetting in a third."""
        async with self._order:
            where = {cid: cid for cid, _eid in applied if cid}
            asking = list(where)
            pipe = self.redis.pipeline(transaction=False)
            for cid, eid in applied:
                if not cid:
                    pipe.eval(_FORGET_TOMB, 1, f"{self.prefix}erasure:{eid}")
            for _hop in range(16):
                for cid in asking:
                    pipe.get(self.key(where[cid], "redirect"))
                replies = await pipe.execute()
                redirects = replies[len(replies) - len(asking) :] if asking else []
                moved = [(c, _text(nxt)) for c, nxt in zip(asking, redirects, strict=True) if nxt]
                where.update(moved)
                asking = [cid for cid, _target in moved]
                if not asking:
                    break
                pipe = self.redis.pipeline(transaction=False)
            if where:
                pipe = self.redis.pipeline(transaction=False)
                for cid, eid in applied:
                    if cid:
                        pipe.hdel(self.key(where[cid], "pending"), eid, pending_accounts(eid))
                await pipe.execute()


def _now() -> int:
    return int(time.time() * 1000)


_RELEASE = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)
_FORGET_TOMB = (
    "if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('SET', KEYS[1], '', 'KEEPTTL') end "
    "return 1"
)


def _parsed(raw: bytes) -> dict[str, Any] | None:
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return d if isinstance(d, dict) else None


def _failed(error: ResponseError) -> ApplyResult:
    """An event the script failed on; a slot error is the deployment's, not the event's."""
    message = str(error)
    if "non local key" in message or "CROSSSLOT" in message or "MOVED" in message:
        raise error
    return ApplyResult("error", error="script_error")


def _touch(
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
    if result is not None:
        people.update(result.merged)
        people.update(result.erased)
        if result.customer_id:
            people.add(result.customer_id)
    return ids, people


def pending_accounts(eid: str) -> str:
    """The field beside an event's pending outputs that keeps the account states its
    answer named (read from the accounts' slots after the call)."""
    return f"{eid}{RS}accounts"


def _dump_states(states: Mapping[str, AccountState]) -> bytes:
    return orjson.dumps({a: [s.fields, s.people, list(s.notify)] for a, s in states.items()})


def _load_states(raw: bytes) -> dict[str, AccountState]:
    return {a: AccountState(f, p, tuple(n)) for a, (f, p, n) in orjson.loads(raw).items()}


def _resolution(answer: Mapping[str, Any]) -> Resolution:
    """A resolution as the script answers it (an empty list comes back as ``{}``)."""
    return (
        list(answer["found"] or []),
        list(answer["usable"] or []),
        list(answer["rejections"] or []),
    )
