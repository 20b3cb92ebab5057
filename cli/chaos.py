"""``portrait chaos``: the guarantees tested under many faults, against an oracle.

A seeded workload — people with several identifiers (phones written several ways, IM ids,
e-mails) that meet only through some events (merges), households sharing accounts,
account-only bills, duplicates, out-of-order times, about 2 % bad records of every kind,
and erasures that race the erased person's events — is produced to the input topics of
its own broker (Tansu) and Redis (AOF ``everysec``). Two ``portrait worker`` processes
consume it while faults are injected one after another: SIGKILL of a worker (restarted),
SIGKILL of a worker's model process, broker SIGSTOP/SIGCONT, a worker paused past its
session timeout (a zombie that resumes), Redis SIGKILL and restart from its AOF, the
same with the AOF cut back to its size one second before the kill while events are being
applied (what ``everysec`` loses when the host dies), a burst of poison records. The
expectation is computed from the generated events alone; at the end every person,
account, the DLQ and the outputs are compared with it:

- each person's ``events_total`` equals their unique events, found by every identifier;
- each account's ``events_total`` equals its account-only events;
- every bad record is in the DLQ (once per record);
- no erased person is back, and no key of the namespace holds an erased value;
- every applied event has its profile output, and no output id went out twice with
  different content.

One line per fault gives what was done and the time until outputs flowed again.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis

from cli.stack import (
    await_node,
    cluster_ports,
    form_cluster,
    free_port,
    node_dir,
    port_answers,
    redis_command,
    spawn,
    start_cluster,
    start_node,
    stop_process,
    tansu_command,
)
from cli.workload import Workload, build_workload, poison
from portrait.config import Settings
from state.store import redis_client
from state.stores import store_for
from streams.kafka import ensure_topics, make_producer, produce_confirmed, read_topic
from streams.produce import route
from streams.records import OutputRecord

FAULTS = (
    "kill_worker",
    "kill_model",
    "pause_broker",
    "zombie",
    "kill_redis",
    "cut_aof",
    "wipe_aof",
    "poison",
)
SHORT_FAULTS = ("kill_worker", "cut_aof", "poison")
UNDER_LOAD = {"cut_aof", "wipe_aof"}
"""Faults injected while the next slice is being applied (the others: between slices)."""
CLUSTER_SHORT_FAULTS = ("kill_worker", "kill_redis", "kill_worker", "poison")
OUTSIDE_CLUSTER_CONTRACT = {"cut_aof", "wipe_aof"}
"""On a Redis Cluster, one node losing writes it acknowledged (an ``everysec`` AOF's
last second on a host crash) is found and redone for the events of people already
known (every node keeps a copy of the input positions), but a merge across nodes can
be left half undone: README, "Redis Cluster". Run on a cluster only when asked for."""


def default_faults(settings: Settings, short: bool) -> tuple[str, ...]:
    """The faults ``portrait chaos`` injects unless told which: on a cluster, the ones
    its contract covers (a killed node restarts from its AOF; it loses nothing)."""
    if not settings.redis_cluster:
        return SHORT_FAULTS if short else FAULTS
    if short:
        return CLUSTER_SHORT_FAULTS
    return tuple(f for f in FAULTS if f not in OUTSIDE_CLUSTER_CONTRACT)


# --- the system under test -------------------------------------------------------------


class Cluster:
    """A broker, a Redis with an AOF (with ``PORTRAIT_REDIS_CLUSTER``: a 3-master Redis
    Cluster, an AOF per node), and two workers, all started (and ended) here."""

    def __init__(self, base: Settings, workdir: Path) -> None:
        self.workdir = workdir
        kafka, http = free_port(), free_port()
        self.redis_ports = cluster_ports() if base.redis_cluster else [free_port()]
        self.settings = base.model_copy(
            update={
                "kafka_bootstrap": f"127.0.0.1:{kafka}",
                "redis_url": f"redis://127.0.0.1:{self.redis_ports[0]}/0",
                "http_port": http,
                "redis_key_prefix": "chaos:",
                "topic_partitions": 4,
                "batch_max_events": 100,
                # the oracle checks the workers' state; the profiles publisher beside
                # each would only take the CPU they are timed on
                "profiles_topic": False,
            }
        )
        self.kafka_port = kafka
        self.broker: subprocess.Popen[bytes] | None = None
        self.nodes: list[subprocess.Popen[bytes] | None] = [None] * len(self.redis_ports)
        self.workers: list[subprocess.Popen[bytes] | None] = [None, None]

    def _spawn(self, command: list[str], log: str, env: dict[str, str] | None = None) -> Any:
        return spawn(command, self.workdir / log, env)

    def node_dir(self, index: int) -> Path:
        """Where a Redis node keeps its AOF (and, on a cluster, its node table)."""
        if not self.settings.redis_cluster:
            return self.workdir
        return node_dir(self.workdir, self.redis_ports[index])

    def node_name(self, index: int) -> str:
        """A Redis node as the fault lines name it."""
        return f"redis node {index}" if len(self.nodes) > 1 else "redis"

    def start_redis(self, index: int | None = None) -> None:
        """Start every Redis node, or the one ``index`` names (from its AOF); on a
        cluster, wait until the cluster reports ``ok`` again."""
        if not self.settings.redis_cluster:
            port = self.redis_ports[0]
            self.nodes[0] = self._spawn(redis_command(port, self.workdir), "redis.log")
            _wait(lambda: port_answers(port), 20, "redis")
        elif index is None:
            self.nodes[:] = start_cluster(self.redis_ports, self.workdir, aof=True, timeout=30)
        else:  # one node again, from its AOF and node table; the cluster ok again
            port = self.redis_ports[index]
            node = self.nodes[index] = start_node(port, self.workdir, aof=True)
            await_node(port, node)
            form_cluster(self.redis_ports, timeout=30)

    def kill_redis(self, index: int) -> None:
        node = self.nodes[index]
        if node is not None:
            node.kill()
            node.wait()

    def start(self) -> None:
        self.broker = self._spawn(tansu_command(self.kafka_port), "broker.log")
        _wait(lambda: port_answers(self.kafka_port), 20, "broker")
        self.start_redis()
        ensure_topics(self.settings)
        for index in range(2):
            self.start_worker(index)

    def start_worker(self, index: int) -> None:
        env = dict(os.environ) | self.settings.as_env()
        env["PORTRAIT_HTTP_PORT"] = str(self.settings.http_port + index)
        command = [sys.executable, "-m", "cli", "worker"]
        self.workers[index] = self._spawn(command, f"worker-{index}.log", env)

    def stop(self) -> None:
        for process in [*self.workers, *self.nodes, self.broker]:
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGCONT)
                stop_process(process)

    def client(self) -> Any:
        """A client of the Redis (a cluster client on a cluster)."""
        return redis_client(self.settings, sync=True)


def _any_node(cluster: Cluster, rng: random.Random) -> int:
    """A Redis node to hit (one draw on a cluster only: a seed's standalone run draws
    the same workers as before clusters were supported)."""
    return rng.randrange(len(cluster.nodes)) if len(cluster.nodes) > 1 else 0


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not come up in {timeout:.0f} s")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def applied_events(client: Any, prefix: str) -> int:
    """Events applied to people and accounts so far (their ``events_total`` summed)."""
    total = 0
    for key in client.scan_iter(f"{prefix}c:*:p", count=1000):
        total += int(client.hget(key, "c:events_total") or 0)
    return total


# --- faults ---------------------------------------------------------------------------


QUIET_S = 1.5
"""Applied events unchanged this long: what was sent is in."""


@dataclass
class FaultResult:
    name: str
    detail: str
    recovery_s: float
    """From the fault to the first event applied after it."""
    settled_s: float = 0.0
    """From the fault to the whole next slice applied (every partition back)."""


def inject(cluster: Cluster, name: str, rng: random.Random) -> FaultResult:
    """Inject one fault and undo it (``recovery_s``: how long that took)."""
    settings = cluster.settings
    index = rng.randrange(2)
    worker = cluster.workers[index]
    detail = ""
    started = time.monotonic()
    if name == "kill_worker" and worker is not None:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        time.sleep(0.5)
        cluster.start_worker(index)
        detail = f"worker {index} SIGKILL, restarted"
    elif name == "kill_model" and worker is not None:
        children = [c for c in _children(worker.pid) if c != worker.pid]
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
        detail = f"worker {index}: {len(children)} child process(es) SIGKILL"
    elif name == "pause_broker" and cluster.broker is not None:
        os.kill(cluster.broker.pid, signal.SIGSTOP)
        time.sleep(3.0)
        os.kill(cluster.broker.pid, signal.SIGCONT)
        detail = "broker SIGSTOP 3 s, SIGCONT"
    elif name == "zombie" and worker is not None:
        pause = settings.effective_session_timeout + 2.0
        os.killpg(worker.pid, signal.SIGSTOP)
        time.sleep(pause)
        os.killpg(worker.pid, signal.SIGCONT)
        detail = f"worker {index} SIGSTOP {pause:.0f} s (past its session), SIGCONT"
    elif name == "kill_redis":
        node = _any_node(cluster, rng)
        cluster.kill_redis(node)
        time.sleep(1.0)
        cluster.start_redis(node)
        detail = f"{cluster.node_name(node)} SIGKILL, restarted from its AOF"
    elif name == "poison":
        records = [OutputRecord(settings.topic("chat"), None, line) for line in poison(rng, 50)]
        producer = make_producer(settings)
        produce_confirmed(producer, records)
        detail = "50 poison records"
    return FaultResult(name, detail, time.monotonic() - started)


class AofSizes:
    """The size of Redis's newest AOF file, sampled every 20 ms in a thread, so that a
    fault can cut the file back to what it held a given time ago."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.samples: list[tuple[float, Path, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def newest(self) -> Path:
        files = list((self.workdir / "appendonlydir").glob("*.incr.aof"))
        if not files:  # a Redis before 7.0: one file
            return self.workdir / "appendonly.aof"
        return max(files, key=lambda f: int(f.name.split(".")[-3]))

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(OSError):
                path = self.newest()
                self.samples.append((time.monotonic(), path, path.stat().st_size))

    def __enter__(self) -> AofSizes:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def cut(self, seconds_ago: float | None) -> int:
        """Truncate the newest file to its size ``seconds_ago`` (None: to nothing); the
        bytes cut."""
        moment = time.monotonic() - (seconds_ago or 0.0)
        earlier = [(path, size) for at, path, size in self.samples if at <= moment]
        path, size = earlier[-1] if earlier and seconds_ago is not None else (self.newest(), 0)
        cut = path.stat().st_size - size
        with path.open("r+b") as handle:
            handle.truncate(size)
        return max(cut, 0)


def cut_aof(
    cluster: Cluster, records: list[OutputRecord], node: int = 0, wipe: bool = False
) -> FaultResult:
    """While a slice is being applied: Redis (on a cluster: the ``node``) SIGKILL, its
    AOF cut back to its size one second before the kill (``wipe``: the whole file of
    writes since the last rewrite, the ledger of input positions with it), restarted
    from it."""
    client, prefix = cluster.client(), cluster.settings.redis_key_prefix
    before = _safe_applied(client, prefix) or 0
    with AofSizes(cluster.node_dir(node)) as sizes:
        time.sleep(1.2)  # a second of samples before the slice
        started = time.monotonic()
        produce_confirmed(make_producer(cluster.settings), records)
        _wait(lambda: (_safe_applied(client, prefix) or 0) > before, 30, "the slice")
        time.sleep(0.6)  # part of the slice applied, and acknowledged
        lost = (_safe_applied(client, prefix) or 0) - before
        cluster.kill_redis(node)
        cut = sizes.cut(None if wipe else 1.0)
    cluster.start_redis(node)
    what = "every write since its last rewrite" if wipe else "1 s"
    detail = (
        f"{cluster.node_name(node)} SIGKILL mid-slice ({lost} applied), AOF cut by {cut} B ({what})"
    )
    return FaultResult("wipe_aof" if wipe else "cut_aof", detail, time.monotonic() - started)


def recovered(cluster: Cluster, before: int, started: float, timeout: float = 90.0) -> float:
    """Seconds from ``started`` until more than ``before`` events are applied."""
    client = cluster.client()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = _safe_applied(client, cluster.settings.redis_key_prefix)
        if now is not None and now > before:
            break
        time.sleep(0.1)
    return time.monotonic() - started


def _safe_applied(client: Any, prefix: str) -> int | None:
    try:
        return applied_events(client, prefix)
    except redis.exceptions.RedisError:
        return None


# --- the comparison --------------------------------------------------------------------


async def _compare_state(settings: Settings, work: Workload, problems: list[str]) -> None:
    """People (one profile each, found by every identifier, their events) and accounts."""
    from streams.lookup import find_customer, get_account

    store = store_for(settings)
    try:
        for person in work.people:
            found = {await find_customer(store, kind, value) for kind, value in person.ids.items()}
            if person.erased:
                if found != {None}:
                    problems.append(f"person {person.index}: erased, but found again")
                continue
            if len(found) != 1 or None in found:
                problems.append(f"person {person.index}: {len(found)} profiles for one person")
                continue
            loaded = await store.load(found.pop() or "")
            total = int(loaded["fields"].get("c:events_total", 0)) if loaded else 0
            if total != len(person.events):
                problems.append(
                    f"person {person.index}: {total} events applied, {len(person.events)} sent"
                )
        for number, expected in work.account_events.items():
            doc = await get_account(store, number)
            if any(p.erased for p in work.people if p.account == number):
                # an account left with nobody goes with its data: whether a holder's
                # erasure found the other holder linked yet depends on arrival order
                continue
            got = doc["stats"]["events_total"] if doc else 0
            if got != expected:
                problems.append(f"account {number}: {got} bills applied, {expected} sent")
    finally:
        await store.close()


def _compare_topics(settings: Settings, work: Workload, problems: list[str]) -> None:
    """Every bad record in the DLQ; every applied event's output, each id one content."""
    dlq = read_topic(settings, settings.topic("dlq"), idle_timeout=3.0, timeout=60)
    places = {(d["topic"], d["partition"], d["offset"]) for d in (orjson.loads(v) for _, v in dlq)}
    if len(places) < work.bad:
        problems.append(f"DLQ holds {len(places)} records, {work.bad} bad records were sent")
    outputs = read_topic(settings, settings.topic("profile-changes"), idle_timeout=3.0, timeout=120)
    seen: dict[str, dict[str, Any]] = {}
    sources: set[str] = set()
    differ: Counter[str] = Counter()
    for _, raw in outputs:
        body = orjson.loads(raw)
        sources.add(body["source_event_id"])
        body.pop("emitted_at", None)
        first = seen.setdefault(body["event_id"], body)
        if first != body:  # which fields differ (their names only)
            differ[",".join(sorted(k for k in {*first, *body} if first.get(k) != body.get(k)))] += 1
    for fields, count in differ.most_common():
        problems.append(f"{count} output ids went out twice with different {fields}")
    missing = work.applied - sources
    if missing:
        problems.append(f"{len(missing)} applied events have no profile output")


def compare(cluster: Cluster, work: Workload) -> list[str]:
    """Every difference between the system's result and the expectation (no values)."""
    import asyncio

    problems: list[str] = []
    asyncio.run(_compare_state(cluster.settings, work, problems))
    client = cluster.client()
    erased = [v.encode() for p in work.people if p.erased for v in (p.phone_digits, p.ids["im_id"])]
    for key in client.scan_iter(f"{cluster.settings.redis_key_prefix}*", count=1000):
        blob = key + repr(client.dump(key)).encode()
        if any(value in blob for value in erased):
            # the key's kind only (its name may hold the value itself)
            tagged = re.sub(r"\{[^}]*\}", "{…}", key.decode("utf-8", "replace"))
            shape = ":".join(tagged.split(":")[:4])
            problems.append(f"a key still holds an erased person's value: {shape}")
            break
    _compare_topics(cluster.settings, work, problems)
    return problems


# --- the run ---------------------------------------------------------------------------


def _settled(cluster: Cluster, quiet_s: float = QUIET_S, timeout: float = 90.0) -> int:
    """Applied events once they stop growing for ``quiet_s`` (what was sent is in)."""
    client = cluster.client()
    prefix = cluster.settings.redis_key_prefix
    last, since = -1, time.monotonic()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = _safe_applied(client, prefix)
        if now is not None and now != last:
            last, since = now, time.monotonic()
        elif now is not None and time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.2)
    return max(last, 0)


def _run_faults(
    cluster: Cluster,
    work: Workload,
    faults: tuple[str, ...],
    rng: random.Random,
    say: Callable[[str], None],
) -> list[FaultResult]:
    """The workload in one slice more than there are faults: each fault is injected
    once the slice before it is applied, then the next slice is sent; the recovery time
    runs from the fault to the first event of that slice applied."""
    slices = _slices(cluster.settings, work, len(faults) + 1)
    produce_confirmed(make_producer(cluster.settings), slices[0])
    client, prefix = cluster.client(), cluster.settings.redis_key_prefix
    _wait(lambda: (_safe_applied(client, prefix) or 0) > 0, 120, "the workers")
    results = []
    for name, records in zip(faults, slices[1:], strict=True):
        before = _settled(cluster)
        started = time.monotonic()
        if name in UNDER_LOAD:
            node = _any_node(cluster, rng)
            result = cut_aof(cluster, records, node, wipe=name == "wipe_aof")
            _wait(lambda: _safe_applied(client, prefix) is not None, 30, "redis loaded")
            before = _safe_applied(client, prefix) or 0  # what the restarted Redis holds
        else:
            result = inject(cluster, name, rng)
            produce_confirmed(make_producer(cluster.settings), records)
        if name == "poison":
            work.bad += 50
        result.recovery_s = recovered(cluster, before, started)
        _settled(cluster)
        result.settled_s = time.monotonic() - started - QUIET_S
        results.append(result)
        say(
            f"  {result.name:13} {result.detail:52} applying again after "
            f"{result.recovery_s:4.1f} s, the next slice in after {result.settled_s:4.1f} s"
        )
    return results


@dataclass
class ChaosReport:
    faults: list[FaultResult]
    problems: list[str]
    events: int
    seconds: float


def run_chaos(
    base: Settings,
    seed: int = 7,
    people: int = 300,
    events_per_person: int = 12,
    faults: tuple[str, ...] = FAULTS,
    say: Callable[[str], None] = print,
    workdir: Path | None = None,
) -> ChaosReport:
    """Build the workload, run two workers under the faults, compare (module docstring).
    ``workdir``: keep the logs and the AOF there (default: a temporary directory)."""
    started = time.monotonic()
    work = build_workload(seed, people, events_per_person)
    say(f"chaos: {len(work.lines)} records, {people} people, seed {seed}")
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    kept = contextlib.nullcontext(str(workdir)) if workdir is not None else None
    with kept or tempfile.TemporaryDirectory(prefix="portrait-chaos-") as tmp:
        cluster = Cluster(base, Path(tmp))
        try:
            cluster.start()
            results = _run_faults(cluster, work, faults, random.Random(seed + 1), say)
            touched = {p.account for p in work.people if p.account and p.erased}
            expected = sum(len(p.events) for p in work.people if not p.erased) + sum(
                n for number, n in work.account_events.items() if number not in touched
            )
            client = cluster.client()
            with contextlib.suppress(TimeoutError):
                _wait(
                    lambda: (
                        (_safe_applied(client, cluster.settings.redis_key_prefix) or 0) >= expected
                    ),
                    240,
                    "every event",
                )
            time.sleep(3.0)  # anything applied twice would show up now
            problems = compare(cluster, work)
        finally:
            cluster.stop()
    report = ChaosReport(results, problems, len(work.lines), time.monotonic() - started)
    for problem in problems:
        say(f"  PROBLEM: {problem}")
    say(f"chaos: {'OK' if not problems else 'FAILED'} in {report.seconds:.0f} s")
    return report


def _routable(work: Workload) -> Iterator[bytes]:
    for line in work.lines:
        try:
            body = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        if isinstance(body, dict) and body.get("type") in _TYPES:
            yield line


def _slices(settings: Settings, work: Workload, parts: int) -> list[list[OutputRecord]]:
    """The workload's records (routed by type; what cannot be routed to channel events),
    in ``parts`` slices of the workload's order."""
    routable = set(_routable(work))
    records = [
        route(settings, line)
        if line in routable
        else OutputRecord(settings.topic("channel-events"), None, line)
        for line in work.lines
    ]
    size = -(-len(records) // parts)
    return [records[i * size : (i + 1) * size] for i in range(parts)]


_TYPES = {"channel.event", "chat.message", "customer.erasure"}
