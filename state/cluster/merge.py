"""Merges on the cluster: fence the survivor, seal each loser, absorb, re-point,
drop (the protocol in ``base.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from portrait import metrics
from processors.layout import DUMP, FENCED, GONE, KEPT_GLOBALS_KEY, MOVED, PROFILE_KEY, REDIRECT_KEY
from processors.layout import RECORD_SEP as RS
from state.answers import (
    ApplyResult,
    RedisUnwell,
    text_of,
)
from state.cluster.base import (
    ClusterBase,
    Restart,
)


class MergeSteps(ClusterBase):
    """Merges on the cluster: fence the survivor, seal each loser, absorb, re-point,."""

    async def _survivor(self, found: Sequence[str]) -> str | None:
        """The person the others merge into (the script's ``survivor_of``)."""
        if not found:
            return None
        firsts = await self._first_seen(found)
        answer = await self._rule(
            "survivor", self.key(found[0], PROFILE_KEY), found=found, first_seen=firsts
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
        pipe.get(self.key(person, REDIRECT_KEY))
        pipe.exists(self.key(person, PROFILE_KEY))
        redirect, has_data = await pipe.execute()
        if redirect and has_data:
            async with self._locked():
                await self._complete(person, text_of(redirect))
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
            self.key(target, PROFILE_KEY),
            op="absorb",
            survivor=target,
            absorb=[seal],
            now=self.now_ms,
            ret=seal["ret"],
        )
        if answer == MOVED:
            raise Restart
        await self._after_merge(target, [seal], None)
        metrics.CLUSTER_MERGES.labels("completed").inc()

    async def _seal(self, loser: str, into: str) -> dict[str, Any] | None:
        """Seal a loser into a survivor: its dump and seal id, or None when it is gone
        (dropped already); a loser sealed into another restarts the event."""
        token = await self._lock()
        now, ret = self.now_ms, self.retention_ms
        answer = await self._op(
            self.key(loser, PROFILE_KEY),
            op="seal",
            cid=loser,
            into=into,
            token=token,
            now=now,
            ret=ret,
        )
        kind, _, rest = answer.partition(RS)
        if kind == GONE:
            return None
        if kind == FENCED:
            raise RedisUnwell("a newer merge lock holder owns this customer")
        if kind != DUMP:
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
                    self.key(survivor, PROFILE_KEY), op="fence", cid=survivor, token=token
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
                await self.redis.set(self.key(m, REDIRECT_KEY), survivor)
            await self._op(
                self.key(loser, PROFILE_KEY), op="drop", cid=loser, now=now, ret=a["ret"]
            )
        merged_kept: list[tuple[str, str, str]] = []
        for a in absorbed:
            once = f"m:{a['cid']}|{a['seal']}"
            found = await self.redis.hget(self.key(survivor, KEPT_GLOBALS_KEY), once)
            if found:
                merged_kept.append((survivor, once, text_of(found)))
        if kept is None:
            await self._count(merged_kept)
        else:
            kept.extend(merged_kept)
