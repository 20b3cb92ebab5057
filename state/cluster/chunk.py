"""A chunk on the cluster: the events of people already known, and of new people,
go out together (``ChunkSteps._chunk``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson
from redis.exceptions import ResponseError

from portrait import metrics
from processors.layout import PROFILE_KEY
from state.answers import (
    ApplyResult,
    Failed,
)
from state.cluster.base import (
    ClusterBase,
    Resolution,
    Restart,
    failed,
    one_owner,
    parsed_delta,
    resolution_of,
    touch,
)


class ChunkSteps(ClusterBase):
    """A chunk on the cluster: the events of people already known, and of new people,."""

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
        parsed = [parsed_delta(raw) for raw in deltas]
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
            touched = touch(touched, d, owners[n], results[n])
            if touched is None:  # an erasure: the rest of the chunk's owners read again
                owners[n + 1 :] = await self._owners_of(parsed[n + 1 :])
                touched = (set(), set())
        await self._send(batch, deltas, results, kept)
        return [r if r is not None else Failed("script_error") for r in results]

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
        return {n: resolution_of(a) for (n, _ids), a in zip(asked, answers["answers"], strict=True)}

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
                    results[n] = failed(error)
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
            self._apply.queue(pipe, (self.key(person, PROFILE_KEY),), args)
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
