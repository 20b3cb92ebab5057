"""``portrait bench --recovery``: how long outputs stop when a worker is killed.

Two default workers share the input partitions on the local stack while channel events
flow at a steady rate (every partition gets some every second). Every ``--every``
seconds one of them (in turn) is killed with SIGKILL and started again half a second
later, as a supervisor would. A kill's recovery is the longest gap in outputs (their
broker timestamps) of any input partition from the kill to the next one: while it
lasts, that partition's customers get nothing. Both rebalances count — the dead
member's session running out, and the restarted worker joining again.

Printed: each kill's recovery, the longest and the median, and whether every event got
exactly one output (nothing lost on the way).
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from cli.bench import _settings_for
from cli.stack import LocalStack, free_port, on_free_ports, stop_process
from portrait.config import Settings
from streams.kafka import client_config, consume_ready, ensure_topics, make_producer

ACCOUNTS = 64  # customers: keys over every partition


class _Outputs(threading.Thread):
    """Reads ``profile.changed`` as it arrives: source event id → broker timestamp (s)."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        topic = settings.topic("profile-changes")
        self.consumer = Consumer(
            client_config(settings)
            | {"group.id": "bench-recovery", "enable.auto.commit": False, "fetch.wait.max.ms": 10}
        )
        partitions: Any = {}
        for _ in range(100):  # a topic just created may not list its partitions yet
            partitions = self.consumer.list_topics(topic, timeout=10).topics[topic].partitions
            if partitions:
                break
            time.sleep(0.2)
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        self.stamps: dict[str, float] = {}
        self.outputs = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for message in consume_ready(self.consumer, 1000, 0.05):
                if message.error() is None:
                    body = orjson.loads(message.value() or b"{}")
                    if body.get("type") == "profile.changed":
                        self.outputs += 1
                        self.stamps.setdefault(body["source_event_id"], message.timestamp()[1])
        self.consumer.close()


class _Events(threading.Thread):
    """Channel events at ``rate`` a second: event id → (input partition, sent at, s)."""

    def __init__(self, settings: Settings, rate: int) -> None:
        super().__init__(daemon=True)
        self.settings, self.rate = settings, rate
        self.sent: dict[str, tuple[int, float]] = {}
        self.stopping = threading.Event()

    def run(self) -> None:
        producer = make_producer(self.settings, **{"linger.ms": 0})
        topic = self.settings.topic("channel-events")
        started, n = time.time(), 0
        while not self.stopping.is_set():
            target = started + n / self.rate
            if (pause := target - time.time()) > 0:
                time.sleep(min(pause, 0.01))
                continue
            event_id = f"rec-{n:07d}"
            body = {
                "event_id": event_id,
                "type": "channel.event",
                "occurred_at": "2026-12-01T09:00:00+08:00",
                "source": "app",
                "customer": {"customer_id": f"REC-{n % ACCOUNTS}"},
                "payload": {"action": "page_view"},
            }

            def delivered(error: Any, message: Any, eid: str = event_id) -> None:
                if error is None:
                    self.sent[eid] = (message.partition(), time.time())

            producer.produce(topic, orjson.dumps(body), f"REC-{n % ACCOUNTS}", callback=delivered)
            producer.poll(0)
            n += 1
        producer.flush(10)


def _worker(settings: Settings, index: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ) | settings.as_env() | {"PORTRAIT_LOG_LEVEL": "INFO"}
    env["PORTRAIT_HTTP_PORT"] = str(settings.http_port + index)
    with log.open("ab") as handle:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", "worker"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def longest_gaps(
    kills: list[float], end: float, sent: dict[str, tuple[int, float]], stamps: dict[str, float]
) -> list[float]:
    """For each kill, the longest time any input partition went without an output
    between the kill and the next kill (or the end): the stall, whatever backlog the
    workers then catch up on."""
    times: dict[int, list[float]] = {}
    for event_id, (partition, _at) in sent.items():
        if event_id in stamps:
            times.setdefault(partition, []).append(stamps[event_id] / 1000)
    for found in times.values():
        found.sort()
    gaps = []
    for kill, until in zip(kills, [*kills[1:], end], strict=True):
        worst = 0.0
        for found in times.values():
            before = [t for t in found if t <= kill]
            previous = before[-1] if before else kill
            for t in found[len(before) :]:
                worst = max(worst, t - previous)  # the first beyond `until` ends a stall
                if t > until:
                    break
                previous = t
            else:
                worst = max(worst, end - previous)  # never resumed
        gaps.append(worst)
    return gaps


def _kill_in_turn(
    settings: Settings,
    workers: list[subprocess.Popen[bytes]],
    kills: int,
    every: float,
    workdir: Path,
) -> list[float]:
    """Kill the workers in turn (SIGKILL), each started again half a second later; when
    each kill happened."""
    kill_times = []
    for k in range(kills):
        index = k % 2
        os.killpg(workers[index].pid, signal.SIGKILL)
        kill_times.append(time.time())
        workers[index].wait()
        time.sleep(0.5)
        workers[index] = _worker(settings, index, workdir / f"worker-{index}.log")
        time.sleep(every)
    return kill_times


def run_recovery_bench(
    base: Settings, kills: int, every: float, rate: int, as_json: bool, workdir: Path
) -> int:
    """Kill one of two workers ``kills`` times, ``every`` seconds apart (module docstring)."""
    base = on_free_ports(base)
    stack = LocalStack(base)
    workdir.mkdir(parents=True, exist_ok=True)
    settings = _settings_for(base, "recovery").model_copy(
        update={"profiles_topic": True, "http_port": free_port()}
    )
    recoveries: list[float] = []
    try:
        stack.up()
        ensure_topics(settings)
        workers = [_worker(settings, i, workdir / f"worker-{i}.log") for i in range(2)]
        outputs, events = _Outputs(settings), _Events(settings, rate)
        outputs.start()
        events.start()
        deadline = time.monotonic() + 300
        while len(outputs.stamps) < rate * 5 and time.monotonic() < deadline:
            time.sleep(0.5)  # both workers up and answering
        time.sleep(every)
        kill_times = _kill_in_turn(settings, workers, kills, every, workdir)
        events.stopping.set()
        events.join(10)
        deadline = time.monotonic() + 120
        while not set(events.sent) <= set(outputs.stamps) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(2.0)
        outputs.stopping.set()
        outputs.join(5)
        for worker in workers:
            stop_process(worker)
        recoveries = longest_gaps(kill_times, time.time(), events.sent, outputs.stamps)
        missing = len(set(events.sent) - set(outputs.stamps))
        summary = {
            "kills": kills,
            "every_seconds": every,
            "events_per_second": rate,
            "recovery_seconds": [round(r, 2) for r in recoveries],
            "longest_seconds": round(max(recoveries), 2),
            "median_seconds": round(statistics.median(recoveries), 2),
            "events": len(events.sent),
            "outputs": outputs.outputs,
            "missing": missing,
            "workdir": str(workdir),
        }
    finally:
        stack.down()
    _print(summary, as_json)
    return 0 if summary["missing"] == 0 else 1


def _print(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
        return
    print(
        f"two default workers, {summary['events_per_second']} channel events/s, one killed "
        f"(SIGKILL) and restarted every {summary['every_seconds']:.0f} s, "
        f"{summary['kills']} times"
    )
    print(f"  longest gap in a partition's outputs per kill: {summary['recovery_seconds']} s")
    print(
        f"  longest {summary['longest_seconds']} s, median {summary['median_seconds']} s; "
        f"{summary['events']} events, {summary['outputs']} outputs, "
        f"{summary['missing']} without one"
    )
