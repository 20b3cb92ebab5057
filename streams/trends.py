"""Group analysis (seed 002): keyword and intent counts per time window, all customers.

The state script counts, once per applied event, the keywords and the intent of the
customer's words into ``{P}trend:<window start ms>`` (a hash: ``messages``, ``kw:<term>``,
``in:<intent>``), windows by event time of ``PORTRAIT_TRENDS_WINDOW_SECONDS``, and lists
the window in ``{P}{TREND_INDEX}``. A worker timer emits one ``trends.window`` event per
window once it has been closed for ``PORTRAIT_TRENDS_GRACE_SECONDS`` (wall clock): the
first worker to claim the window (``SET … NX``) emits it, so several workers emit it once;
a failed delivery releases the claim for the next tick. Counts and claims expire after
``PORTRAIT_TRENDS_RETENTION_SECONDS``; ``portrait trends`` reads the stored windows.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from portrait.config import Settings
from processors.attributes import iso_from_ms
from processors.layout import TREND_INDEX, global_bases
from streams.records import OutputRecord

Deliver = Callable[[Sequence[OutputRecord]], Awaitable[None]]


def window_key(prefix: str, start_ms: int) -> str:
    return f"{prefix}trend:{start_ms}"


def summarise(counts: dict[str, int], top_k: int) -> dict[str, Any]:
    """Top terms (count, then term), intents (most frequent first), messages."""
    terms = sorted(
        ((n, name[3:]) for name, n in counts.items() if name.startswith("kw:")),
        key=lambda pair: (-pair[0], pair[1]),
    )
    intents = sorted(
        ((n, name[3:]) for name, n in counts.items() if name.startswith("in:")),
        key=lambda pair: (-pair[0], pair[1]),
    )
    return {
        "messages": counts.get("messages", 0),
        "terms": [{"term": term, "count": n} for n, term in terms[:top_k]],
        "intents": {name: n for n, name in intents},
    }


def _decode(raw: dict[bytes, bytes]) -> dict[str, int]:
    return {k.decode("utf-8"): int(v) for k, v in raw.items()}


def window_event(start_ms: int, seconds: int, counts: dict[str, int], top_k: int) -> dict[str, Any]:
    """The ``trends.window`` event of one closed window."""
    return {
        "type": "trends.window",
        "event_id": hashlib.sha256(f"trends|{start_ms}|{seconds}".encode()).hexdigest()[:32],
        "emitted_at": iso_from_ms(int(time.time() * 1000)),
        "window_start": iso_from_ms(start_ms),
        "window_end": iso_from_ms(start_ms + seconds * 1000),
        "window_seconds": seconds,
        **summarise(counts, top_k),
    }


def _bases(settings: Settings) -> list[str]:
    stripes = settings.redis_global_stripes if settings.redis_cluster else 0
    return global_bases(settings.redis_key_prefix, stripes)


async def _window(redis: Any, settings: Settings, start_ms: int) -> dict[str, int]:
    """A window's counts, its stripes added up on a cluster."""
    total: Counter[str] = Counter()
    for base in _bases(settings):
        total.update(_decode(await redis.hgetall(window_key(base, start_ms))))
    return dict(total)


async def _indexed(redis: Any, settings: Settings, high: float | str) -> list[int]:
    starts: set[int] = set()
    for base in _bases(settings):
        starts.update(
            int(m) for m in await redis.zrangebyscore(f"{base}{TREND_INDEX}", "-inf", high)
        )
    return sorted(starts)


async def emit_closed_windows(redis: Any, settings: Settings, deliver: Deliver) -> int:
    """Emit every closed, unclaimed window; forget index entries past retention. Returns
    the number of windows emitted."""
    prefix = settings.redis_key_prefix
    window_ms = settings.trends_window_seconds * 1000
    retention_ms = settings.trends_retention_seconds * 1000
    now_ms = int(time.time() * 1000)
    for base in _bases(settings):
        await redis.zremrangebyscore(f"{base}{TREND_INDEX}", "-inf", f"({now_ms - retention_ms}")
    closed = await _indexed(
        redis, settings, now_ms - window_ms - settings.trends_grace_seconds * 1000
    )
    emitted = 0
    for start_ms in closed:
        claim = f"{window_key(prefix, start_ms)}:emitted"
        if not await redis.set(claim, "1", nx=True, px=retention_ms):
            continue
        try:
            counts = await _window(redis, settings, start_ms)
            body = window_event(
                start_ms, settings.trends_window_seconds, counts, settings.trends_top_k
            )
            record = OutputRecord(
                settings.topic("trends"), str(start_ms).encode(), orjson.dumps(body)
            )
            await deliver([record])
        except Exception:
            await redis.delete(claim)  # the next tick tries again
            raise
        emitted += 1
    return emitted


async def recent_windows(
    redis: Any, settings: Settings, bucket_seconds: int, last: int
) -> list[dict[str, Any]]:
    """The ``last`` most recent buckets of ``bucket_seconds`` (stored windows added up),
    newest first, each summarised."""
    buckets: dict[int, Counter[str]] = {}
    bucket_ms = bucket_seconds * 1000
    for start_ms in await _indexed(redis, settings, "+inf"):
        counts = await _window(redis, settings, start_ms)
        bucket = start_ms - start_ms % bucket_ms
        buckets.setdefault(bucket, Counter()).update(counts)
    out = []
    for start in sorted(buckets, reverse=True)[:last]:
        out.append(
            {
                "window_start": iso_from_ms(start),
                "window_end": iso_from_ms(start + bucket_ms),
                **summarise(dict(buckets[start]), settings.trends_top_k),
            }
        )
    return out
