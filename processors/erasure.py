"""Erasure suppression (docs/design.md "Erasure"): erased identifiers kept only as keyed hashes.

After ``customer.erasure`` the state script keeps, for every identifier the person held
(and every identifier the erasure named), a suppression entry ``{P}sup:<hash>`` holding
the erasure time; an event that carries one of them and occurred before that time is
dropped (``portrait_events_total{outcome="suppressed"}``), so a late event, a redelivery
or a replay of the input topics gives no profile back. An event after the erasure (the
person comes back) starts a new profile.

The hash is HMAC-SHA-256 with ``PORTRAIT_ERASURE_KEY``: without the key, a suppression
entry does not tell whose identifier it was (a plain hash of a phone number can be
reversed by trying every number). Every event's person identifiers travel to the state
script with their hashes, which it keeps with the person (``idh``) so that an erasure
can suppress identifiers the command did not name.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from portrait.config import LOCAL_ERASURE_KEY

HASH_HEX = 32
"""Hex characters of the HMAC kept (128 bits)."""


class ErasureHasher:
    """Keyed hashes of identifier keys (``kind:value``)."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __call__(self, identifier_key: str) -> str:
        digest = hmac.new(self._key, identifier_key.encode("utf-8"), hashlib.sha256)
        return digest.hexdigest()[:HASH_HEX]

    def many(self, identifier_keys: Sequence[str]) -> list[str]:
        """The hashes of several identifier keys, in order."""
        return [self(key) for key in identifier_keys]


LOCAL_HASHER = ErasureHasher(LOCAL_ERASURE_KEY)
"""The local profile's hasher (``Settings.erasure_hash_key`` without a key)."""
