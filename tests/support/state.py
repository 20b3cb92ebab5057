"""Applying events straight through the state script, and reading the results back,
on the session Redis (no broker, no models)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from portrait.config import Settings
from portrait.events import INPUT_EVENT_ADAPTER
from processors.document import DocumentSettings
from processors.profile import DeltaSettings, build_delta
from state.answers import ApplyResult
from state.cluster.store import ClusterProfileStore
from state.store import RedisProfileStore, redis_client
from streams.lookup import get_account, get_profile

T = TypeVar("T")


def open_store(url: str, prefix: str) -> RedisProfileStore:
    """A store on this Redis and key prefix: the cluster store when the environment says
    PORTRAIT_REDIS_CLUSTER (``make test-cluster``)."""
    if Settings().redis_cluster:
        return ClusterProfileStore(url, prefix)
    return RedisProfileStore(url, prefix)


def raw_client(url: str) -> Any:
    """A plain client for reading keys directly (a cluster client under
    PORTRAIT_REDIS_CLUSTER: :func:`state.store.redis_client`)."""
    return redis_client(Settings(redis_url=url), sync=True)


def with_store(settings: Settings, use: Callable[[RedisProfileStore], Awaitable[T]]) -> T:
    """Run ``use`` with a store on these settings' Redis and key prefix."""

    async def go() -> T:
        store = open_store(settings.redis_url, settings.redis_key_prefix)
        try:
            return await use(store)
        finally:
            await store.close()

    return asyncio.run(go())


def delta_of(event: dict[str, Any], deltas: DeltaSettings) -> bytes:
    """The state script's input for one envelope (at a fixed clock)."""
    parsed = INPUT_EVENT_ADAPTER.validate_python(event)
    return build_delta(parsed, deltas).to_json(now_ms=1_800_000_000_000, retention_ms=86_400_000)


def apply_events(
    settings: Settings, events: list[dict[str, Any]], deltas: DeltaSettings
) -> list[ApplyResult]:
    """Apply input envelopes, in order, in one script call."""
    raw = [delta_of(e, deltas) for e in events]
    return with_store(settings, lambda store: store.apply(raw))


def profile_of(
    settings: Settings, kind: str, value: str, document: DocumentSettings | None = None
) -> dict[str, Any] | None:
    """The profile document found by one identifier, or None."""
    return with_store(settings, lambda store: get_profile(store, kind, value, settings=document))


def account_of(
    settings: Settings, number: str, document: DocumentSettings | None = None
) -> dict[str, Any] | None:
    """The account document of an account number, or None."""
    return with_store(settings, lambda store: get_account(store, number, document))
