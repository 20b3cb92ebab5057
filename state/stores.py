"""The profile store a process's settings name: a standalone Redis or a Redis Cluster
(``PORTRAIT_REDIS_CLUSTER``)."""

from __future__ import annotations

from portrait.config import Settings
from state.cluster.store import ClusterProfileStore
from state.store import RedisProfileStore


def store_for(settings: Settings) -> RedisProfileStore:
    """The store of these settings (URL, key prefix, password and TLS options)."""
    if settings.redis_cluster:
        return ClusterProfileStore.for_settings(settings)
    return RedisProfileStore.for_settings(settings)
