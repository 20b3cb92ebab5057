"""``portrait`` commands that read and act on profiles: profile and account documents,
problems, trends, product statistics, emotion, erasure."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import orjson

from cli.common import IDENTIFIER_FLAGS, one_identifier, print_json
from portrait.config import Settings
from processors.document import document_settings

# --- problems ---------------------------------------------------------------------------


def cmd_problems(settings: Settings, args: argparse.Namespace) -> int:
    from models.encoder import load_encoder
    from processors.layout import sections_of
    from processors.problems import all_problems, most_similar
    from state.stores import store_for
    from streams.lookup import find_customer

    chosen = one_identifier(args, "problems")
    if chosen is None:
        return 2
    kind, value = chosen

    async def lookup() -> list[dict[str, Any]] | None:
        store = store_for(settings)
        try:
            customer_id = await find_customer(store, kind, value)
            state = await store.load(customer_id) if customer_id else None
        finally:
            await store.close()
        return None if state is None else all_problems(sections_of(state["fields"]).registers)

    problems = asyncio.run(lookup())
    if problems is None:
        print(f"no customer with {IDENTIFIER_FLAGS[kind]} {value}", file=sys.stderr)
        return 1
    if args.like:
        problems = most_similar(problems, args.like, load_encoder(settings.embedding_model), 3)
    if args.json:
        print_json(problems)
        return 0
    for problem in problems:
        resolution = problem["resolution"]
        outcome = (
            f"{resolution['type']} {resolution['outcome'] or ''} {resolution['at']}".strip()
            if resolution
            else "unresolved"
        )
        similarity = f"  similarity {problem['similarity']}" if "similarity" in problem else ""
        print(f"{problem['at']}  {problem['intent']:10}  {outcome}{similarity}")
        print(f"    {problem['text']}")
    return 0


# --- trends -----------------------------------------------------------------------------


def _seconds(text: str) -> int:
    """``90``, ``30m``, ``1h``, ``7d``, ``1h30m`` → seconds (a bare number is seconds)."""
    from pytimeparse.timeparse import timeparse as parse

    text = text.strip()
    seconds = int(text) if text.isdigit() else parse(text)
    if seconds is None:
        raise SystemExit(f"portrait: not a duration: {text!r} (e.g. 90, 30m, 1h, 7d)")
    return int(seconds)


def cmd_trends(settings: Settings, args: argparse.Namespace) -> int:
    from state.store import redis_client
    from streams.trends import recent_windows

    bucket = _seconds(args.window) if args.window else settings.trends_window_seconds
    if bucket < settings.trends_window_seconds or bucket % settings.trends_window_seconds:
        print(
            f"--window must be a multiple of PORTRAIT_TRENDS_WINDOW_SECONDS "
            f"({settings.trends_window_seconds} s)",
            file=sys.stderr,
        )
        return 2

    async def read() -> list[dict[str, Any]]:
        client = redis_client(settings)
        try:
            return await recent_windows(client, settings, bucket, args.last)
        finally:
            await client.aclose()

    windows = asyncio.run(read())
    if args.json:
        print_json(windows)
        return 0
    for window in windows:
        terms = ", ".join(f"{t['term']} {t['count']}" for t in window["terms"][:10])
        intents = ", ".join(f"{name} {n}" for name, n in window["intents"].items())
        print(f"{window['window_start']} … {window['window_end']}  {window['messages']} messages")
        print(f"    terms:   {terms or '-'}")
        print(f"    intents: {intents or '-'}")
    return 0


# --- profile ----------------------------------------------------------------------------


def cmd_account(settings: Settings, args: argparse.Namespace) -> int:
    from state.stores import store_for
    from streams.lookup import get_account

    async def lookup() -> dict[str, Any] | None:
        store = store_for(settings)
        try:
            return await get_account(store, args.account_no, document_settings(settings))
        finally:
            await store.close()

    account = asyncio.run(lookup())
    if account is None:
        print(f"no account {args.account_no}", file=sys.stderr)
        return 1
    if args.json:
        print_json(account)
        return 0
    print(f"account {account['account_no']}  version {account['version']}")
    for person in account["people"]:
        print(f"  {person['customer_id']}  {person['role'] or '-'}")
    stats = account["stats"]
    print(
        f"  events {stats['events_total']}  first {stats['first_seen']}  last {stats['last_seen']}"
    )
    for name, value in account["indicators"].items():
        print(f"  {name}: {value}")
    return 0


def cmd_profile(settings: Settings, args: argparse.Namespace) -> int:
    from models.registry import ModelRegistry, customer_model_in_use
    from state.stores import store_for
    from streams.lookup import SeveralPeople, get_profile

    chosen = one_identifier(args, "profile get")
    if chosen is None:
        return 2
    kind, value = chosen

    async def lookup() -> dict[str, Any] | None:
        store = store_for(settings)
        try:
            registry = ModelRegistry(store.redis, settings.redis_key_prefix)
            model = await customer_model_in_use(registry, settings.customer_model_version)
            return await get_profile(store, kind, value, model, document_settings(settings))
        finally:
            await store.close()

    try:
        profile = asyncio.run(lookup())
    except SeveralPeople as several:
        print(
            f"{several.count} people hold account {value}: use portrait account get",
            file=sys.stderr,
        )
        return 2
    if profile is None:
        print(f"no customer with {IDENTIFIER_FLAGS[kind]} {value}", file=sys.stderr)
        return 1
    if args.json:
        print_json(profile)
    else:
        from cli.render import render_profile

        print(render_profile(profile))
    return 0


# --- products ---------------------------------------------------------------------------


def cmd_products(settings: Settings, args: argparse.Namespace) -> int:
    from processors.assist import PHASES, parse_stats
    from state.stores import store_for

    async def read() -> dict[str, str]:
        store = store_for(settings)
        try:
            return await store.product_stats()
        finally:
            await store.close()

    stats = parse_stats(asyncio.run(read()))
    rows = [
        {
            "phase": phase,
            "product": product,
            "offers": s.offers,
            "accepted": s.accepted,
            "rate": round(s.rate, 4),
        }
        for phase in PHASES
        if args.phase in (None, phase)
        for product, s in sorted(stats.get(phase, {}).items())
    ]
    if args.json:
        print_json(rows)
        return 0
    print(f"{'phase':10} {'product':24} {'offers':>7} {'accepted':>9} {'rate':>6}")
    for row in rows:
        print(
            f"{row['phase']:10} {row['product']:24} {row['offers']:7d} "
            f"{row['accepted']:9d} {row['rate']:6.3f}"
        )
    return 0


# --- erase ------------------------------------------------------------------------------


def cmd_erase(settings: Settings, args: argparse.Namespace) -> int:
    from streams.kafka import ensure_topics, make_producer, produce_confirmed
    from streams.produce import erasure_event, route

    chosen = one_identifier(args, "erase")
    if chosen is None:
        return 2
    kind, value = chosen
    ensure_topics(settings)
    line = erasure_event(kind, value, args.requested_by)
    produce_confirmed(make_producer(settings), [route(settings, line)])
    print(
        f"erasure requested ({orjson.loads(line)['event_id']}); the worker removes the "
        "profile and emits profile.erased"
    )
    return 0


# --- emotion ----------------------------------------------------------------------------


def cmd_emotion(_settings: Settings, args: argparse.Namespace) -> int:
    from models.emotion import default_model

    model = default_model()
    if args.jsonl:
        return _emotion_jsonl(model, Path(args.jsonl), args.batch)
    if not args.text:
        print("emotion: give a text or --jsonl FILE", file=sys.stderr)
        return 2
    [result] = model.predict([" ".join(args.text)])
    if args.json:
        print_json(result.as_dict(), pretty=False)
    else:
        scores = "  ".join(f"{label} {score:.3f}" for label, score in result.scores.items())
        finer = f"  ({result.emotion})" if result.emotion else ""
        print(f"{result.label}{finer}  {scores}")
    return 0


def _emotion_jsonl(model: Any, path: Path, batch: int) -> int:
    """Each line back with ``label`` and ``scores`` added, in order; bad lines reported.
    ``-`` reads standard input."""
    if str(path) == "-":
        lines = [line for line in sys.stdin.buffer if line.strip()]
    else:
        with path.open("rb") as handle:
            lines = [line for line in handle if line.strip()]
    bad = 0
    for start in range(0, len(lines), batch):
        rows: list[dict[str, Any] | None] = []
        for line in lines[start : start + batch]:
            try:
                row = orjson.loads(line)
            except orjson.JSONDecodeError:
                row = None
            rows.append(row if isinstance(row, dict) and isinstance(row.get("text"), str) else None)
        texts = [row["text"] for row in rows if row is not None]
        results = iter(model.predict(texts))
        for number, row in enumerate(rows, start=start + 1):
            if row is None:
                bad += 1
                print(f'line {number}: no "text" string; skipped', file=sys.stderr)
                continue
            result = next(results)
            row.update(label=result.label, scores=result.scores, emotion=result.emotion)
            sys.stdout.write(orjson.dumps(row).decode("utf-8") + "\n")
    sys.stdout.flush()
    return 1 if bad else 0
