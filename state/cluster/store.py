"""The profile store on a Redis Cluster, put together from its steps (the protocol is
described in ``base.py``)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from redis.exceptions import ResponseError

from portrait import metrics
from processors.layout import ERASURE, MOVED, PENDING_KEY, PROFILE_KEY, REDIRECT_KEY
from state.answers import (
    Applied,
    ApplyResult,
    Duplicate,
    Failed,
    RedisUnwell,
    parse_answer,
    parse_position,
    text_of,
)
from state.cluster.accounts import AccountSteps
from state.cluster.base import (
    ATTEMPTS,
    FORGET_TOMB_SCRIPT,
    UNKNOWN_POSITION,
    Restart,
    failed,
    pending_accounts,
)
from state.cluster.chunk import ChunkSteps
from state.cluster.erasure import ErasureSteps
from state.cluster.merge import MergeSteps


class ClusterProfileStore(ChunkSteps, MergeSteps, ErasureSteps, AccountSteps):
    """:class:`~state.store.ProfileStore` on a Redis Cluster (``base.py``)."""

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
            {text_of(k): text_of(v) for k, v in found.items()}
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

    async def _event(self, raw: bytes, kept: list[tuple[str, str, str]]) -> ApplyResult:
        try:
            d = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return Failed("malformed_delta")
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
            return failed(error)

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
        [reply] = await self._call(self.key(person, PROFILE_KEY), orjson.dumps(step))
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
            return parse_answer(reply)
        answer, increments = text_of(reply[0]), text_of(reply[1])
        if answer == MOVED:
            await self._settle(person, owned)
            raise Restart
        result = parse_answer(answer.encode("utf-8"))
        # a duplicate names the customer it was first applied to (its outputs as they
        # were); the links and the kept increments are the live person's
        entity = person
        if increments:
            kept.append((entity, step["eid"], increments))
        if isinstance(result, Applied | Duplicate):  # again on a redelivery: once each
            for acct in step.get("accts") or []:
                await self._on_account("link", acct, entity, step["ret"], eid=step["eid"])
        if step.get("absorb"):
            await self._after_merge(entity, step["absorb"], kept)
            metrics.CLUSTER_MERGES.labels("event").inc(len(step["absorb"]))
        await self._fill_person(result, step, entity)
        return result

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
                    pipe.eval(FORGET_TOMB_SCRIPT, 1, f"{self.prefix}{ERASURE}{eid}")
            for _hop in range(16):
                for cid in asking:
                    pipe.get(self.key(where[cid], REDIRECT_KEY))
                replies = await pipe.execute()
                redirects = replies[len(replies) - len(asking) :] if asking else []
                moved = [(c, text_of(nxt)) for c, nxt in zip(asking, redirects, strict=True) if nxt]
                where.update(moved)
                asking = [cid for cid, _target in moved]
                if not asking:
                    break
                pipe = self.redis.pipeline(transaction=False)
            if where:
                pipe = self.redis.pipeline(transaction=False)
                for cid, eid in applied:
                    if cid:
                        pipe.hdel(self.key(where[cid], PENDING_KEY), eid, pending_accounts(eid))
                await pipe.execute()
