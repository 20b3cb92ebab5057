"""Profile state: the store interface and its Redis implementation (Lua scripts beside it)."""

from state.store import ApplyResult, ProfileStore, RedisProfileStore

__all__ = ["ApplyResult", "ProfileStore", "RedisProfileStore"]
