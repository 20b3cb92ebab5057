"""Profile state: the store interface and its Redis implementation (Lua scripts beside it)."""

from state.answers import ApplyResult
from state.store import ProfileStore, RedisProfileStore

__all__ = ["ApplyResult", "ProfileStore", "RedisProfileStore"]
