"""``portrait`` commands that move data: produce, import, replay, snapshot, tail, and the
schemas generated from the code."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from cli.common import print_json
from portrait.config import Settings, yield_cpu
from portrait.errors import without_password
from processors.document import document_settings

# --- produce ----------------------------------------------------------------------------


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from streams.kafka import ensure_topics, make_producer, produce_confirmed
    from streams.produce import Unroutable, jsonl_lines, route

    ensure_topics(settings)
    records, skipped = [], 0
    with Path(args.file).open("rb") as handle:
        for number, line in enumerate(jsonl_lines(handle), start=1):
            try:
                records.append(route(settings, line, args.topic))
            except Unroutable as exc:
                skipped += 1
                print(
                    f"line {number}: skipped ({exc}; use --topic to send it raw)", file=sys.stderr
                )
    producer = make_producer(settings)
    produce_confirmed(producer, records)
    print(f"produced {len(records)} event(s), skipped {skipped}")
    return 0 if skipped == 0 else 1


# --- import -----------------------------------------------------------------------------


def cmd_import(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from streams.imports import build_imports, parse_mapping
    from streams.kafka import ensure_topics, make_producer, produce_confirmed
    from streams.produce import route

    path = Path(args.file)
    fmt = args.format or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    try:
        mapping = parse_mapping(args.map or [])
    except ValueError as exc:
        print(f"import: {exc}", file=sys.stderr)
        return 2
    key = settings.customer_id_hash_key()
    data = path.read_bytes()
    lines, summary = build_imports(data, fmt, args.source, mapping, args.confidence, key)
    yield_cpu(settings)  # a backfill: the live workers on this host go first
    ensure_topics(settings)
    producer = make_producer(settings)
    step = 1000
    with tqdm(total=len(lines), unit="rows", file=sys.stderr, disable=not lines) as bar:
        for start in range(0, len(lines), step):
            chunk = lines[start : start + step]
            produce_confirmed(producer, [route(settings, line) for line in chunk])
            bar.update(len(chunk))
    for reason in summary.reasons[:20]:
        print(reason, file=sys.stderr)
    print(f"accepted {summary.accepted}, rejected {summary.rejected}")
    return 0 if summary.rejected == 0 else 1


# --- tail -------------------------------------------------------------------------------


def cmd_snapshot(settings: Settings, args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from models.registry import ModelRegistry, customer_model_in_use
    from state.stores import store_for
    from streams.profiles import snapshot

    async def export(handle: Any, bar: Any) -> int:
        store = store_for(settings)
        try:
            registry = ModelRegistry(store.redis, settings.redis_key_prefix)
            model = await customer_model_in_use(registry, settings.customer_model_version)

            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            document = document_settings(settings)
            return await snapshot(settings, store, model, document, handle.write, progress)
        finally:
            await store.close()

    with (
        Path(args.jsonl).open("wb") as handle,
        tqdm(unit="profiles", desc="snapshot", file=sys.stderr) as bar,
    ):
        written = asyncio.run(export(handle, bar))
    print(f"{written} profiles written to {args.jsonl}", file=sys.stderr)
    return 0


def cmd_replay(settings: Settings, args: argparse.Namespace) -> int:
    from datetime import datetime

    from tqdm import tqdm

    from state.store import redis_client
    from streams.kafka import check_broker
    from streams.replay import replay_parallel, verify

    prefix = args.namespace or f"replay-{time.strftime('%Y%m%d-%H%M%S')}:"
    target = settings.model_copy(
        update={"redis_url": args.redis_url or settings.redis_url, "redis_key_prefix": prefix}
    )
    if prefix == settings.redis_key_prefix and target.redis_url == settings.redis_url:
        print("the replay target must differ from the live namespace", file=sys.stderr)
        return 2
    client = redis_client(target, sync=True)
    if next(client.scan_iter(match=f"{prefix}*", count=100), None) is not None:
        print(f"namespace {prefix!r} is not empty; choose a fresh one", file=sys.stderr)
        return 2
    since_ms = int(datetime.fromisoformat(args.since).timestamp() * 1000) if args.since else None
    check_broker(settings)
    yield_cpu(settings)  # a backfill: the live workers on this host go first

    with tqdm(unit="events", desc="replayed", file=sys.stderr) as bar:

        def progress(events: int, _seconds: float) -> None:
            bar.update(events - bar.n)

        summary = replay_parallel(
            settings,
            target,
            args.processes,
            since_ms=since_ms,
            idle_seconds=args.idle_timeout,
            progress=progress,
        )
    result: dict[str, Any] = {
        "namespace": prefix,
        "redis_url": without_password(target.redis_url),
        "events": summary.events,
        "customers": summary.customers,
        "outcomes": dict(summary.outcomes),
        "seconds": round(summary.seconds, 3),
        "events_per_second": round(summary.rate, 1),
    }
    if args.verify:
        report = asyncio.run(verify(settings, target))
        result["differences"] = report
    _print_replay(result, args.json, args.verify)
    return 1 if args.verify and result["differences"] else 0


def _print_replay(result: dict[str, Any], as_json: bool, verified: bool) -> None:
    if as_json:
        print_json(result)
        return
    outcomes = ", ".join(f"{kind} {count:,}" for kind, count in sorted(result["outcomes"].items()))
    print(
        f"replayed {result['events']:,} events into {result['namespace']!r} in "
        f"{result['seconds']:.1f} s ({result['events_per_second']:,.0f}/s): "
        f"{result['customers']:,} customers, {outcomes}"
    )
    if verified:
        if not result["differences"]:
            print("verify: every rebuilt profile equals the live one")
        for cid, paths in sorted(result["differences"].items()):
            print(f"verify: {cid} differs at {', '.join(paths)}")


def cmd_tail(settings: Settings, args: argparse.Namespace) -> int:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

    from streams.kafka import check_broker, client_config

    check_broker(settings)
    topic = (
        args.topic if args.topic.startswith(settings.topic_prefix) else settings.topic(args.topic)
    )
    consumer = Consumer(
        client_config(settings)
        | {"group.id": f"portrait-tail-{time.time_ns()}", "enable.auto.commit": False}
    )
    # Assign partitions directly: no group join to wait for, and no offsets committed.
    metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        print(f"tail: no topic {topic}", file=sys.stderr)
        consumer.close()
        return 1
    start = OFFSET_BEGINNING if args.from_beginning else OFFSET_END
    consumer.assign([TopicPartition(topic, p, start) for p in metadata.partitions])
    seen, idle_since = 0, time.monotonic()
    try:
        while args.max is None or seen < args.max:
            message = consumer.poll(0.2)
            if message is None or message.error():
                if args.idle_timeout and time.monotonic() - idle_since > args.idle_timeout:
                    break
                continue
            idle_since = time.monotonic()
            seen += 1
            value = message.value() or b""
            if args.json:
                sys.stdout.write(value.decode("utf-8", errors="replace") + "\n")
                sys.stdout.flush()
            else:
                from cli.render import render_output

                print(render_output(value))
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    return 0


# --- schemas ----------------------------------------------------------------------------


def cmd_schemas(_settings: Settings, args: argparse.Namespace) -> int:
    from cli.schemas import stale_schemas, write_schemas

    if args.check:
        stale = stale_schemas()
        for name in stale:
            print(f"schemas/{name} differs from the event models", file=sys.stderr)
        return 1 if stale else 0
    for path in write_schemas():
        print(path)
    return 0
