"""Erasure on the cluster: suppression first, everything that points at the person,
its own keys last, the tombstone after."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from processors.layout import ACCOUNT_ENTITY, ERASURE, FACTS, PEOPLE_KEY, PROFILE_KEY, REDIRECT_KEY
from processors.layout import RECORD_SEP as RS
from processors.layout import UNIT_SEP as US
from state.answers import (
    ApplyResult,
    Duplicate,
    Erased,
    Noop,
    Suppressed,
    text_of,
)
from state.cluster.base import (
    ClusterBase,
)


class ErasureSteps(ClusterBase):
    """Erasure on the cluster: suppression first, everything that points at the person,."""

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
        return Suppressed(gone)

    async def _erase(self, d: Mapping[str, Any]) -> ApplyResult:
        """An erasure, under the merge lock; its tombstone written last."""
        tomb = f"{self.prefix}{ERASURE}{d['eid']}"
        async with self._locked():
            done = await self.redis.get(tomb)
            if done is not None:
                erased = text_of(done)
                return Duplicate(replay=Erased(erased.split(US)) if erased else None)
            found: list[str] = []
            owners = {i: text_of(v) for i in d["ids"] if (v := await self.redis.get(self._idx(i)))}
            account_people = [
                [
                    text_of(m)
                    for m in await self.redis.smembers(self.key(ACCOUNT_ENTITY + a, PEOPLE_KEY))
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
            return Noop()
        return Erased(found)

    async def _erase_person(self, person: str, ts: int, ttl: int, d: Mapping[str, Any]) -> None:
        """Everything that points at the person first, the person's keys last."""
        answer = await self._op(self.key(person, PROFILE_KEY), op="facts", cid=person)
        if not answer.startswith(FACTS + RS):
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
            await self.redis.delete(self.key(m, REDIRECT_KEY))
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
        await self._op(
            self.key(person, PROFILE_KEY), op="drop", cid=person, all=True, now=now, ret=ret
        )
