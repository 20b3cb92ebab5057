"""``portrait bench --loss N``: the two-process run of ``portrait bench``, N times, with
every output counted by an independent reader and every missing event traced.

Each run fills a fresh copy of the input topic with the benchmark's channel events,
starts ``portrait worker --processes 2`` (two processes in one consumer group: the
rebalance when the second joins is where a loss would hide), and counts the
``profile.changed`` outputs by source event id. An event without an output is then
looked for again, apart from the run's own watcher:

- ``on_topic``: a fresh consumer finds its output after all (the watcher missed it);
- ``pending``: Redis holds its outputs as pending delivery (applied, not delivered yet);
- ``applied``: its customer's ``events_total`` counts every event of theirs, yet no
  output exists (applied, outputs lost);
- ``dlq``: it went to the dead-letter topic;
- ``not_applied``: none of these.

Duplicated outputs (two contents for one output id) are counted too.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from cli.bench import _fill, _settings_for, _watch, bench_events
from cli.stack import LocalStack, on_free_ports, stop_process
from portrait.config import Settings
from processors.identity import customer_id_for
from processors.layout import PENDING_KEY
from state.stores import store_for
from streams.kafka import read_topic


def _outputs(settings: Settings) -> tuple[set[str], int]:
    """Source event ids of every ``profile.changed`` on the topic (a fresh reader), and
    how many output ids came with two different contents."""
    seen: set[str] = set()
    contents: dict[str, bytes] = {}
    twice = 0
    for _key, value in read_topic(settings, settings.topic("profile-changes"), idle_timeout=3):
        body = orjson.loads(value)
        if body.get("type") != "profile.changed":
            continue
        seen.add(body["source_event_id"])
        stamped = orjson.dumps({k: v for k, v in body.items() if k != "emitted_at"})
        if contents.setdefault(body["event_id"], stamped) != stamped:
            twice += 1
    return seen, twice


def _dlq(settings: Settings) -> set[str]:
    """Event ids of the records on the dead-letter topic (from their original bytes)."""
    found = set()
    for _key, value in read_topic(settings, settings.topic("dlq"), idle_timeout=3):
        original = base64.b64decode(orjson.loads(value)["value_b64"])
        try:
            found.add(str(orjson.loads(original)["event_id"]))
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue
    return found


async def _classify(
    settings: Settings, missing: set[str], events: list[dict[str, Any]]
) -> Counter[str]:
    on_topic, _ = _outputs(settings)
    dlq = _dlq(settings)
    by_customer: dict[str, list[str]] = {}
    for event in events:
        by_customer.setdefault(event["customer"]["customer_id"], []).append(event["event_id"])
    owner = {eid: c for c, ids in by_customer.items() for eid in ids}
    key = settings.customer_id_hash_key()
    store = store_for(settings)
    found: Counter[str] = Counter()
    try:
        for eid in sorted(missing):
            if eid in on_topic:
                found["on_topic"] += 1
                continue
            if eid in dlq:
                found["dlq"] += 1
                continue
            account = owner[eid]
            cid = customer_id_for(f"customer_id:{account}", key)
            pending = await store.redis.hget(store.key(cid, PENDING_KEY), eid)
            if pending:
                found["pending"] += 1
                continue
            state = await store.load(cid)
            total = int((state or {"fields": {}})["fields"].get("c:events_total", 0))
            found["applied" if total >= len(by_customer[account]) else "not_applied"] += 1
    finally:
        await store.close()
    return found


def run_loss(base: Settings, runs: int, events: int, customers: int, workdir: Path) -> int:
    """``runs`` two-process runs; prints one line per run and the totals; 1 when any
    event was lost or any output duplicated."""
    base = on_free_ports(base)
    stack = LocalStack(base)
    payload = bench_events(events, customers)
    decoded = [orjson.loads(record.value or b"{}") for record in payload]
    workdir.mkdir(parents=True, exist_ok=True)
    totals: Counter[str] = Counter()
    lossy = 0
    try:
        stack.up()
        for run in range(1, runs + 1):
            settings = _settings_for(base, f"loss{run}")
            _fill(settings, settings.topic("channel-events"), payload)
            log = workdir / f"run-{run:02d}.log"
            with log.open("wb") as handle:
                process = subprocess.Popen(
                    [sys.executable, "-m", "cli", "worker", "--processes", "2"],
                    env=dict(os.environ) | settings.as_env() | {"PORTRAIT_LOG_LEVEL": "INFO"},
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                seconds, _outputs_seen, unique = _watch(
                    settings, settings.topic("profile-changes"), events, timeout=300
                )
            finally:
                stop_process(process)
            on_topic, twice = _outputs(settings)
            missing = {e["event_id"] for e in decoded} - on_topic
            traced = asyncio.run(_classify(settings, missing, decoded)) if missing else Counter()
            totals.update(traced)
            totals["duplicated"] += twice
            lossy += bool(missing) or bool(twice)
            rate = events / seconds if seconds else 0.0
            print(
                f"run {run:2d}: {rate:7.0f} events/s, watcher {unique}/{events}, "
                f"reader {len(on_topic)}/{events}, duplicated {twice}, "
                f"missing {dict(traced) or 0}",
                flush=True,
            )
    finally:
        stack.down()
    print(
        f"{runs} runs of {events} events, two processes: {lossy} with a loss or a duplicate; "
        f"traced {dict(totals)}; logs in {workdir}"
    )
    return 1 if lossy else 0


def loss_workdir() -> Path:
    """A fresh directory for a run's worker logs."""
    return Path(tempfile.gettempdir()) / f"portrait-bench-{time.strftime('%H%M%S')}"
