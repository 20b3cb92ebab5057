"""Input positions kept in Redis with the state they describe (Kafka Streams and Flink
keep theirs with their state the same way).

Kafka's committed offset says what was *delivered*; it moves only after a batch's
outputs are confirmed. Redis's position for a partition says what was *applied*; the
state script advances it in the same call as the state (``apply_event.lua``). When Redis
loses writes — the last second of an ``everysec`` AOF on a host crash, what an
asynchronous replica had not received at a failover — its positions go back with its
state, and the two disagree. So:

- on assignment every partition starts from the lower of Kafka's committed offset and
  Redis's position (:meth:`Ledger.claim`): Kafka redelivers exactly what Redis lost, and
  an event applied but not yet delivered is redelivered too (its pending outputs go out);
- each chunk carries the positions this worker expects Redis to hold; a Redis that lost
  writes (or a newer generation that took the partition over) fails the script with
  ``STALE_OFFSETS`` and nothing is applied. The worker then lowers the failed batch's
  partitions to what it had delivered, stops applying and rejoins the group, so the claim
  above runs again (:meth:`Ledger.rewind`). A timer compares Redis's positions with
  what was acknowledged every second as well (:meth:`Ledger.watch`), so a loss is found
  when no more events arrive for the partitions it hit.

A position is ``"<generation>:<offset>"`` (the next offset to apply), one field per
partition (``"<topic>|<partition>"``) in one hash per consumer group.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import orjson

from portrait import metrics
from state.answers import StaleOffsets, parse_position
from state.store import RedisProfileStore
from streams.records import InputRecord

log = logging.getLogger("portrait.offsets")

Partition = tuple[str, int]
UNKNOWN = -1
"""Offset of a partition that neither Kafka nor Redis has a position for."""


def field(partition: Partition) -> str:
    return f"{partition[0]}|{partition[1]}"


def _offset(position: str | None) -> int | None:
    """The offset of a stored position: None if there is none; a claimed partition
    nothing was applied on yet (``UNKNOWN``) starts from its first offset, 0 (Kafka's
    reset policy moves a seek below the log start to the earliest record)."""
    parsed = parse_position(position or "")
    return None if parsed is None else max(parsed[1], 0)


class Ledger:
    """One lane's positions: where each of its partitions stands in Redis."""

    def __init__(self, prefix: str, group: str) -> None:
        self.key = f"{prefix}offsets:{group}"
        self.generation = UNKNOWN
        self.done: dict[Partition, int] = {}
        """Next offset per partition after the last acknowledged batch."""
        self.rewinding = False
        """Redis turned out behind: nothing is applied until the next claim."""

    def position(self, offset: int) -> str:
        return f"{self.generation}:{offset}"

    def plan(self, chunks: Sequence[Sequence[InputRecord]]) -> list[bytes]:
        """Each chunk's positions (expected, next) for the state script, from the last
        acknowledged batch on; partitions never claimed are not checked."""
        at = dict(self.done)
        plans = []
        for chunk in chunks:
            parts: dict[Partition, list[str]] = {}
            for record in chunk:
                partition = (record.topic, record.partition)
                if partition not in at:
                    continue
                part = parts.setdefault(partition, [field(partition), self.position(at[partition])])
                at[partition] = record.offset + 1
                part[2:] = [self.position(at[partition])]
            body = {"key": self.key, "parts": list(parts.values())}
            plans.append(orjson.dumps(body) if parts else b"")
        return plans

    def advance(self, records: Sequence[InputRecord]) -> None:
        """A batch is acknowledged: its partitions' positions follow it."""
        for record in records:
            partition = (record.topic, record.partition)
            if partition in self.done:
                self.done[partition] = record.offset + 1

    def lost(self, stored: Mapping[str, str]) -> list[str]:
        """Partitions whose stored position is behind what this worker acknowledged (or
        gone): Redis lost writes. A newer generation's position is not a loss."""
        behind = []
        for partition, done in self.done.items():
            at = parse_position(stored.get(field(partition), "")) or (UNKNOWN - 1, UNKNOWN)
            if at < (self.generation, done):  # tuples: generation first, then offset
                behind.append(field(partition))
        return behind

    async def watch(self, store: RedisProfileStore) -> bool:
        """Check Redis's positions (a timer calls this every second, so a loss is found
        even when no more events come for the partitions it hit); True when Redis lost
        writes and the lane must rewind and rejoin."""
        if self.rewinding or self.generation == UNKNOWN:
            return False
        behind = self.lost(await store.positions(self.key))
        if behind:
            self.rewinding = True
            metrics.STATE_REWINDS.labels("behind").inc()
            log.warning(
                "Redis lost writes: its positions are behind what was acknowledged; "
                "rejoining the group",
                extra={"partitions": behind},
            )
        return bool(behind)

    async def claim(
        self,
        store: RedisProfileStore,
        committed: Mapping[Partition, int | None],
        generation: int,
    ) -> dict[Partition, int]:
        """Take the assigned partitions for ``generation``: each starts at the lower of
        Kafka's committed offset and Redis's position (no commit: from the earliest
        record, as Kafka would; a commit Redis has no position for: from the first
        record, as Redis lost it all), written back as this generation's. Returns the
        partitions Redis is behind Kafka on, with the offset to seek to."""
        stored = await store.positions(self.key)
        self.generation, self.done, seek = generation, {}, {}
        for partition, kafka in committed.items():
            redis = _offset(stored.get(field(partition)))
            if kafka is None:  # no commit: Kafka starts from the earliest record
                self.done[partition] = UNKNOWN
            elif redis is None:  # Kafka committed what Redis has no trace of: Redis lost
                # everything (or is new): the partition is read again from its start
                self.done[partition] = seek[partition] = 0
            elif redis < kafka:
                self.done[partition] = seek[partition] = redis
            else:
                self.done[partition] = kafka
        await store.set_positions(
            self.key, {field(p): self.position(o) for p, o in self.done.items()}
        )
        self.rewinding = False
        if seek:
            metrics.STATE_REWINDS.labels("seek").inc(len(seek))
            log.warning(
                "Redis is behind the committed offsets: starting from its positions",
                extra={"partitions": sorted(field(p) for p in seek)},
            )
        return seek

    async def rewind(
        self, store: RedisProfileStore, records: Sequence[InputRecord], stale: StaleOffsets
    ) -> None:
        """After ``STALE_OFFSETS``: lower the failed batch's partitions to what was
        delivered (its applied chunks must be redelivered for their outputs), and apply
        nothing more until the next claim."""
        floors = {
            field(p): self.position(self.done[p])
            for p in {(r.topic, r.partition) for r in records}
            if p in self.done and self.done[p] >= 0
        }
        self.rewinding = True
        metrics.STATE_REWINDS.labels("fenced" if stale.fenced else "behind").inc()
        log.warning(
            "Redis does not hold the expected input positions; rejoining the group",
            extra={"partition": stale.partition, "fenced": stale.fenced},
        )
        if not stale.fenced:  # a zombie leaves the partitions to their new owner
            await store.lower_positions(self.key, floors)
