"""The state on a 3-master Redis Cluster against the same events on a standalone Redis
(docs/design.md "Scale"): the same profiles, accounts and counters in any order, with
merges across slots, a worker killed at every step of a merge, two workers merging at
once, and erasure."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import orjson
import pytest
import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot

from cli.workload import build_workload
from portrait.config import DEFAULT_IDENTITY_FILE, Settings
from portrait.events import INPUT_EVENT_ADAPTER
from processors.document import document_settings
from processors.identity import IdentityRules, customer_id_for
from processors.profile import DeltaSettings, NoUsableIdentifier, build_delta
from state.answers import AccountsApplied, Applied, Duplicate, StaleOffsets
from state.cluster.store import ClusterProfileStore
from state.store import RedisProfileStore
from streams.lookup import get_account, get_profile
from streams.offsets import Ledger
from streams.records import InputRecord
from tests.support.envelopes import chan, event

# the reference side is a standalone Redis: make test-cluster runs this module in the
# standalone session (it starts its own cluster either way)
pytestmark = pytest.mark.standalone

DELTAS = DeltaSettings(
    timezone=ZoneInfo("Asia/Shanghai"), identity=IdentityRules.load(DEFAULT_IDENTITY_FILE)
)
DOCUMENT = document_settings(Settings())
LOOKUPS: tuple[tuple[str, str], ...] = (
    ("phone", "13912345678"),
    ("phone", "13800001111"),
    ("email", "li@corp.cn"),
    ("im_id", "wx1"),
    ("im_id", "j1"),
    ("im_id", "j2"),
)


def bill(
    eid: str, at: str, customer: dict[str, Any], action: str, amount: float = 0
) -> dict[str, Any]:
    payload: dict[str, Any] = {"action": action, **({"amount": amount} if amount else {})}
    return event(eid, "channel.event", at, "app", customer, payload)


STORY = [
    chan(
        "k1", "2026-11-01T09:00:00+08:00", "wechat", {"phone": "13912345678", "account_no": "H-1"}
    ),
    chan("k2", "2026-11-02T09:00:00+08:00", "app", {"phone": "13800001111", "account_no": "H-1"}),
    bill("k3", "2026-11-03T10:00:00+08:00", {"phone": "13912345678"}, "purchase", 320.0),
    bill("k4", "2026-11-03T11:00:00+08:00", {"account_no": "H-1"}, "bill_paid", 120.0),
    chan("k5", "2026-11-04T09:00:00+08:00", "web", {"im_id": "wx1", "email": "li@corp.cn"}),
    bill("k6", "2026-11-05T10:00:00+08:00", {"im_id": "wx1"}, "purchase", 80.0),
    # joins the person of k2 (phone) with the person of k5 (email): a merge across slots
    chan("k7", "2026-11-06T09:00:00+08:00", "web", {"phone": "13800001111", "email": "li@corp.cn"}),
    chan("k8", "2026-11-07T09:00:00+08:00", "web", {"email": "li@corp.cn", "account_no": "C-9"}),
    chan("k9", "2026-11-08T09:00:00+08:00", "web", {"phone": "00000000000", "im_id": "j1"}),
    chan("k10", "2026-11-08T10:00:00+08:00", "web", {"phone": "00000000000", "im_id": "j2"}),
]
MERGE = 6  # index of k7


def deltas(events: Sequence[dict[str, Any]]) -> list[bytes]:
    return [
        build_delta(INPUT_EVENT_ADAPTER.validate_python(e), DELTAS).to_json(
            now_ms=1_800_000_000_000, retention_ms=86_400_000
        )
        for e in events
    ]


def open_store(url: str, prefix: str, cluster: bool) -> RedisProfileStore:
    if cluster:
        store = ClusterProfileStore(url, prefix)
        store.lock_ms = 300  # a killed holder's lock lapses quickly here
        return store
    return RedisProfileStore(url, prefix)


async def view(store: RedisProfileStore) -> dict[str, Any]:
    """Everything a reader sees: profiles by each identifier, accounts, counters."""
    out: dict[str, Any] = {"population": await store.population()}
    for kind, value in LOOKUPS:
        doc = await get_profile(store, kind, value, settings=DOCUMENT)
        out[f"{kind}:{value}"] = doc and {k: v for k, v in doc.items() if k != "scores"}
    for number in ("H-1", "C-9"):
        out[number] = await get_account(store, number, DOCUMENT)
    out["stats"] = await store.product_stats()
    return out


async def apply_and_view(
    url: str, prefix: str, cluster: bool, batches: list[list[dict[str, Any]]]
) -> Any:
    store = open_store(url, prefix, cluster)
    try:
        answers = [await store.apply(deltas(batch)) for batch in batches]
        return answers, await view(store)
    finally:
        await store.close()


def comparable(results: Sequence[Any]) -> list[tuple[Any, ...]]:
    """What outputs are built from (set members in any order)."""
    return [_comparable(r) for r in results]


def _comparable(r: Any) -> tuple[Any, ...]:
    if isinstance(r, Duplicate):
        return (r.status, r.customer_id, r.replay and _comparable(r.replay))
    if isinstance(r, AccountsApplied):
        return (r.status, [_comparable(a) for a in r.accounts])
    if not isinstance(r, Applied):
        return (r.status, dataclasses.astuple(r))
    return (
        r.status,
        r.customer_id,
        r.merged,
        r.state and r.state["fields"],
        r.state and sorted(r.state["ids"]),
        r.old,
        sorted(r.ids_added),
        r.links_added,
        r.rejections,
        r.accounts,
        r.people,
        r.notify,
    )


def test_the_cluster_gives_the_standalone_state_in_any_order(
    redis_url: str, redis_cluster_url: str, unique: str
) -> None:
    cids = {customer_id_for("phone:13800001111"), customer_id_for("im_id:wx1")}
    assert len({key_slot(f"t:c:{{{c}}}:p".encode()) for c in cids}) == 2  # two slots merge
    for seed in range(3):
        order = STORY[:]
        random.Random(seed).shuffle(order)
        batches = [order[:4], order[4:], order[:3]]  # the last: redeliveries
        prefix = f"c{unique}{seed}:"
        alone = asyncio.run(apply_and_view(redis_url, prefix, False, batches))
        spread = asyncio.run(apply_and_view(redis_cluster_url, prefix, True, batches))
        assert spread[1] == alone[1], f"order {[e['event_id'] for e in order]}"
        for mine, theirs in zip(spread[0], alone[0], strict=True):
            assert comparable(mine) == comparable(theirs)
    li = alone[1]["email:li@corp.cn"]
    assert li is not None and li == alone[1]["phone:13800001111"]
    assert [a["account_no"] for a in li["accounts"]] == ["C-9", "H-1"]
    assert alone[1]["im_id:j1"]["customer_id"] != alone[1]["im_id:j2"]["customer_id"]


class Killed(BaseException):
    """The worker process died here."""


def killing(store: ClusterProfileStore, at: int) -> list[int]:
    """Make the store die at its ``at``-th script call (the lock it holds stays)."""
    calls = [0]
    call = store._call

    async def dying(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == at:
            store._unlock = _nothing  # type: ignore[method-assign]
            raise Killed
        return await call(*args, **kwargs)

    store._call = dying  # type: ignore[method-assign]
    return calls


async def _nothing() -> None:
    return None


def test_a_merge_killed_at_every_step_completes_the_same(
    redis_url: str, redis_cluster_url: str, unique: str
) -> None:
    before, merge, after = STORY[:MERGE], [STORY[MERGE]], STORY[MERGE + 1 :]
    _, reference = asyncio.run(
        apply_and_view(redis_url, f"r{unique}:", False, [before, merge, after])
    )

    async def killed_at(step: int) -> tuple[int, dict[str, Any]]:
        prefix = f"k{unique}{step}:"
        first = open_store(redis_cluster_url, prefix, True)
        await first.apply(deltas(before))
        calls = killing(first, step)  # type: ignore[arg-type]
        with contextlib.suppress(Killed):
            await first.apply(deltas(merge))
        second = open_store(redis_cluster_url, prefix, True)
        try:
            await second.apply(deltas(merge))  # redelivered to the next worker
            await second.apply(deltas(after))
            return calls[0], await view(second)
        finally:
            await second.close()

    step = 1
    while True:
        made, seen = asyncio.run(killed_at(step))
        assert seen == reference, f"killed at script call {step}"
        if made < step:  # the merge finished before this step: every step was covered
            break
        step += 1
    assert step >= 8  # fence, seal, absorb+apply, index, link, drop, counters …


def test_two_workers_merging_at_once_agree(
    redis_url: str, redis_cluster_url: str, unique: str
) -> None:
    before, rest = STORY[:MERGE], STORY[MERGE:]
    _, reference = asyncio.run(apply_and_view(redis_url, f"w{unique}:", False, [before, rest]))

    async def both() -> dict[str, Any]:
        prefix = f"x{unique}:"
        a, b = (open_store(redis_cluster_url, prefix, True) for _ in range(2))
        try:
            await a.apply(deltas(before))
            await asyncio.gather(a.apply(deltas(rest)), b.apply(deltas(rest[::-1])))
            return await view(a)
        finally:
            await a.close()
            await b.close()

    assert asyncio.run(both()) == reference


NEW_PEOPLE = [
    {"phone": f"1370000{n:04d}", **({"email": f"n{n}@x.cn"} if n % 3 == 0 else {})}
    for n in range(16)
]


async def new_people(store: RedisProfileStore) -> dict[str, Any]:
    out: dict[str, Any] = {"population": await store.population()}
    for who in NEW_PEOPLE:
        out[who["phone"]] = await get_profile(store, "phone", who["phone"], settings=DOCUMENT)
    return out


def purchases(tag: str, people: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
    """One purchase of each person, an hour apart."""
    return [
        bill(f"{tag}{n}", f"2026-11-02T{n:02d}:00:00+08:00", who, "purchase", n + 1.0)
        for n, who in enumerate(people)
    ]


def new_people_alone(url: str, prefix: str, batch: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`new_people` after the batch on a standalone store (the reference)."""

    async def go() -> dict[str, Any]:
        store = open_store(url, prefix, False)
        try:
            await store.apply(deltas(batch))
            return await new_people(store)
        finally:
            await store.close()

    return asyncio.run(go())


def test_new_people_claimed_by_two_workers_at_once_agree(
    redis_url: str, redis_cluster_url: str, unique: str
) -> None:
    """A chunk's new people are claimed together (``ClusterProfileStore._claim_fresh``):
    two workers creating the same people at once, in opposite orders, leave the
    standalone state (a lost claim runs its event alone; a repeat answers dup)."""
    batch = purchases("f", NEW_PEOPLE)

    async def both() -> tuple[dict[str, Any], list[str]]:
        prefix = f"h{unique}:"
        a, b = (open_store(redis_cluster_url, prefix, True) for _ in range(2))
        try:
            first, second = await asyncio.gather(
                a.apply(deltas(batch)), b.apply(deltas(batch[::-1]))
            )
            statuses = sorted(r.status for r in [*first, *second])
            return await new_people(a), statuses
        finally:
            await a.close()
            await b.close()

    reference = new_people_alone(redis_url, f"g{unique}:", batch)
    spread, statuses = asyncio.run(both())
    assert spread == reference
    assert all(reference[who["phone"]] is not None for who in NEW_PEOPLE)
    assert statuses == ["dup"] * 16 + ["ok"] * 16


def test_claims_of_a_worker_killed_before_its_calls_are_taken_over(
    redis_url: str, redis_cluster_url: str, unique: str
) -> None:
    """A worker killed after its claims, before the calls, leaves identifiers pointing at
    people who do not exist yet (all of an event's, or some: the next event of such a
    person can name one more): the events settle the index and apply as if the claims
    had never been made."""
    batch = purchases("k", NEW_PEOPLE[:6])

    async def after_a_kill() -> tuple[dict[str, Any], list[str]]:
        store = open_store(redis_cluster_url, f"o{unique}:", True)
        try:
            for n, raw in enumerate(deltas(batch)):  # what killed workers' claims left
                d = orjson.loads(raw)
                for identifier in d["ids"] if n % 2 == 0 else d["ids"][:1]:
                    await store.redis.set(store._idx(identifier), d["newcid"])  # type: ignore[attr-defined]
            answers = await store.apply(deltas(batch))
            return await new_people(store), [r.status for r in answers]
        finally:
            await store.close()

    reference = {
        k: v
        for k, v in new_people_alone(redis_url, f"m{unique}:", batch).items()
        if k != "population"
    }
    spread, statuses = asyncio.run(after_a_kill())
    assert statuses == ["ok"] * 6
    assert {k: v for k, v in spread.items() if k in reference} == reference


def test_an_erasure_between_reading_and_claiming_a_new_person_wins(
    redis_url: str, redis_cluster_url: str, unique: str
) -> None:
    """An erasure that lands after a chunk read a new person's identifiers, before the
    claims, suppresses the event as it would have had it come first."""
    who = {"phone": "13600000001"}
    purchase = bill("n1", "2026-11-02T09:00:00+08:00", who, "purchase", 9.0)
    erasure = event("n2", "customer.erasure", "2026-11-03T00:00:00Z", "crm", who, {})

    async def alone() -> list[str]:
        store = open_store(redis_url, f"i{unique}:", False)
        try:
            answers = [
                *await store.apply(deltas([erasure])),
                *await store.apply(deltas([purchase])),
            ]
            assert await get_profile(store, "phone", who["phone"], settings=DOCUMENT) is None
            return [r.status for r in answers]
        finally:
            await store.close()

    async def between() -> list[str]:
        prefix = f"j{unique}:"
        store, other = (open_store(redis_cluster_url, prefix, True) for _ in range(2))
        read = store._owners_of  # type: ignore[attr-defined]

        async def then_erased(*args: Any) -> Any:
            found = await read(*args)
            if not erased:
                erased.extend(await other.apply(deltas([erasure])))
            return found

        erased: list[Any] = []
        store._owners_of = then_erased  # type: ignore[attr-defined]
        try:
            applied = await store.apply(deltas([purchase]))
            answers = [*erased, *applied]
            assert await get_profile(store, "phone", who["phone"], settings=DOCUMENT) is None
            return [r.status for r in answers]
        finally:
            await store.close()
            await other.close()

    assert asyncio.run(between()) == asyncio.run(alone()) == ["noop", "suppressed"]


def test_an_erasure_on_the_cluster_leaves_no_trace(redis_cluster_url: str, unique: str) -> None:
    prefix = f"e{unique}:"
    erase = event("x1", "customer.erasure", "2026-11-10T00:00:00Z", "crm", {"im_id": "wx1"}, {})
    late = chan("x2", "2026-11-05T12:00:00+08:00", "web", {"email": "li@corp.cn"})

    async def go() -> tuple[list[Any], dict[str, Any]]:
        store = open_store(redis_cluster_url, prefix, True)
        try:
            await store.apply(deltas(STORY))
            answers = await store.apply(deltas([erase, erase, late]))
            await store.confirm_delivered([("", "x1")])
            return answers, await view(store)
        finally:
            await store.close()

    answers, seen = asyncio.run(go())
    assert [a.status for a in answers] == ["erased", "dup", "suppressed"]
    assert seen["email:li@corp.cn"] is None and seen["phone:13800001111"] is None
    assert seen["phone:13912345678"] is not None  # the household's other person stays
    client = RedisCluster.from_url(redis_cluster_url)
    leftovers = [
        key
        for key in client.scan_iter(match=f"{prefix}*", target_nodes=RedisCluster.PRIMARIES)
        if any(s in key + repr(client.dump(key)).encode() for s in (b"wx1", b"li@corp", b"1380000"))
    ]
    client.close()
    assert leftovers == []


@pytest.fixture(autouse=True)
def _no_stray(redis_cluster_url: str) -> None:
    client = redis.Redis.from_url(redis_cluster_url)
    assert client.cluster("info")["cluster_state"] == "ok"
    client.close()


def long_chunk(seed: int) -> list[dict[str, Any]]:
    """Sixty events of twelve people in one chunk: most of them plain (every identifier
    known, one person), some new, a merge across people and an erasure mid-chunk, then
    events of the erased and merged people."""
    rng = random.Random(seed)
    phones = [f"1390000{n:04d}" for n in range(12)]
    story: list[dict[str, Any]] = []
    for n in range(60):
        moment = f"2026-11-{1 + n // 24:02d}T{n % 24:02d}:00:00+08:00"
        who = {"phone": rng.choice(phones)}
        if n == 25:  # joins two people already seen in this chunk
            who = {"phone": phones[0], "email": "m@x.cn"}
        elif n == 20:
            who = {"phone": phones[1], "email": "m@x.cn"}
        if n == 30:
            story.append(event("e30", "customer.erasure", moment, "crm", {"phone": phones[2]}, {}))
            continue
        story.append(bill(f"l{n}", moment, who, rng.choice(["purchase", "bill_paid"]), n + 1.0))
    return story


def test_a_long_chunk_sends_known_people_together_and_agrees(
    redis_url: str, redis_cluster_url: str, unique: str
) -> None:
    """Plain and fresh events go out in pipelines (:meth:`ClusterProfileStore._chunk`);
    the state and every answer are the standalone script's, and the chunk takes far
    fewer lone protocol runs than events (the first, before the script is on the nodes,
    too)."""
    story = long_chunk(7)
    warm = [
        bill(f"w{n}", "2026-10-31T09:00:00+08:00", {"phone": f"1390000{n:04d}"}, "purchase")
        for n in range(12)
    ]
    prefix = f"l{unique}:"

    async def run(url: str, cluster: bool) -> tuple[Any, Any, int]:
        store = open_store(url, prefix, cluster)
        alone = [0]
        if cluster:
            event_alone = store._event  # type: ignore[attr-defined]

            async def counted(*args: Any) -> Any:
                alone[0] += 1
                return await event_alone(*args)

            store._event = counted  # type: ignore[attr-defined]
        try:
            await store.apply(deltas(warm))
            answers = await store.apply(deltas(story))
            again = await store.apply(deltas(story[:10]))  # redelivered
            out = {
                f"p{n}": await get_profile(store, "phone", f"1390000{n:04d}", settings=DOCUMENT)
                for n in range(12)
            }
            out["stats"] = await store.product_stats()
            out["population"] = await store.population()
            return comparable(answers) + comparable(again), out, alone[0]
        finally:
            await store.close()

    alone_answers, alone_view, _ = asyncio.run(run(redis_url, False))
    spread_answers, spread_view, lone = asyncio.run(run(redis_cluster_url, True))
    assert spread_view == alone_view
    assert spread_answers == alone_answers
    assert [a[0] for a in alone_answers].count("erased") == 1  # mid-chunk (later events: anew)
    assert alone_view["p0"] == alone_view["p1"]  # merged mid-chunk
    # new people (the warm-up's, the erased one's) are claimed together: alone go only
    # the events that join an identifier to a person, the merge and the erasure
    assert 3 <= lone <= 8, lone


def test_a_node_that_lost_its_last_writes_holds_the_lowest_position(
    redis_cluster_url: str, unique: str
) -> None:
    """Every primary keeps a copy of the input positions, written after the chunk's
    state on that node: a node that loses its last writes (its AOF's last second, on a
    host crash) loses its copy's advance with them. The lowest copy is Redis's position:
    the watch finds the loss, the next chunk is refused, the claim starts there again."""
    prefix = f"p{unique}:"
    ledger = Ledger(prefix, "g")
    records = [InputRecord("t.chat", 0, o, None, b"") for o in range(len(STORY))]

    async def go() -> tuple[list[str], dict[str, str], bool, dict[str, str], Any, Any]:
        store = open_store(redis_cluster_url, prefix, True)
        assert isinstance(store, ClusterProfileStore)
        try:
            await ledger.claim(store, {("t.chat", 0): 0}, 1)
            copies = await store._copies(ledger.key)
            (plan,) = ledger.plan([records])
            await store.apply(deltas(STORY), plan)
            ledger.advance(records)
            after = await store.positions(ledger.key)
            await store.redis.hset(copies[1], "t.chat|0", "1:0")  # that node's loss
            lost = await ledger.watch(store)
            lowest = await store.positions(ledger.key)
            (again,) = ledger.plan([[InputRecord("t.chat", 0, len(STORY), None, b"")]])
            refused = None
            try:
                await store.apply(deltas(STORY[:1]), again)
            except StaleOffsets as stale:
                refused = stale
            seek = await Ledger(prefix, "g").claim(store, {("t.chat", 0): len(STORY)}, 2)
            return copies, after, lost, lowest, refused, seek
        finally:
            await store.close()

    copies, after, lost, lowest, refused, seek = asyncio.run(go())
    client = RedisCluster.from_url(redis_cluster_url)
    nodes = {client.nodes_manager.get_node_from_slot(key_slot(c.encode())).name for c in copies}
    client.close()
    assert len(copies) == len(nodes) == 3  # one copy on each primary
    assert after == {"t.chat|0": f"1:{len(STORY)}"}
    assert lost and lowest == {"t.chat|0": "1:0"}
    assert refused is not None and refused.stored == "1:0"
    assert seek == {("t.chat", 0): 0}  # every event again: duplicates but on that node


def _workload_deltas(seed: int, people: int) -> tuple[list[bytes], Any]:
    """The fault suite's seeded workload (``cli.chaos``: phones written three ways,
    people meeting through later events, households, bills, duplicates, out-of-order
    times, erasures racing their person's events) as deltas; bad records left out."""
    work = build_workload(seed, people, 6)
    out = []
    for line in work.lines:
        try:
            event = INPUT_EVENT_ADAPTER.validate_json(line)
            delta = build_delta(event, DELTAS)
        except (ValueError, NoUsableIdentifier):
            continue
        out.append(delta.to_json(now_ms=1_800_000_000_000, retention_ms=86_400_000 * 60))
    return out, work


def test_the_fault_suites_workload_gives_the_same_documents_on_the_cluster(
    redis_url: str, redis_cluster_url: str, unique: str
) -> None:
    """Every person (by each identifier) and every account document, the counters and
    the population equal the standalone script's after the seeded workload, applied in
    chunks of 50 and then redelivered in chunks of 70."""
    raw, work = _workload_deltas(3, 40)
    lookups = [(kind, value) for p in work.people for kind, value in p.ids.items()]
    accounts = sorted({p.account for p in work.people if p.account})

    async def run(url: str, cluster: bool) -> dict[str, Any]:
        store = open_store(url, f"w{unique}:", cluster)
        try:
            for size in (50, 70):
                for start in range(0, len(raw), size):
                    await store.apply(raw[start : start + size])
            out: dict[str, Any] = {"stats": await store.product_stats()}
            out["population"] = await store.population()
            for kind, value in lookups:
                doc = await get_profile(store, kind, value, settings=DOCUMENT)
                out[f"{kind}:{value}"] = doc and {k: v for k, v in doc.items() if k != "scores"}
            for number in accounts:
                out[number] = await get_account(store, number, DOCUMENT)
            return out
        finally:
            await store.close()

    alone = asyncio.run(run(redis_url, False))
    spread = asyncio.run(run(redis_cluster_url, True))
    assert sum(1 for v in alone.values() if v) > len(work.people)  # people were found
    assert any(alone[f"{k}:{v}"] is None for k, v in lookups)  # erasures happened
    differ = sorted(key for key in alone if alone[key] != spread[key])
    assert differ == []
