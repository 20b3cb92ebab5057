"""Who may read what (docs/api.md): bearer tokens and scopes.

``PORTRAIT_API_TOKENS_FILE`` lists tokens by the hex SHA-256 of the token, each with a
subject and a scope:

- ``service`` — any profile and account; no agent's prompts;
- ``supervisor`` — any profile and account, and any agent's prompts and page;
- ``agent:<id>`` — only the customers that agent is connected to (an active friend or
  group relation, or a call or chat with them in the last ``PORTRAIT_AGENT_ACCESS_HOURS``:
  ``processors.relationships.is_connected``, checked on the loaded profile by
  ``api.http.Api.readable``), only its own prompts and page; no account documents (an
  account is not one customer).

A presented token is hashed and compared with every listed hash in constant time
(``hmac.compare_digest``, no early exit), so the answer time does not tell how much of a
token matched. Tokens, identifiers and profile values are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from portrait.config import ConfigurationError

log = logging.getLogger("portrait.api")

AGENT_SCOPE = "agent:"
SCOPES = ("service", "supervisor")


@dataclass(frozen=True, slots=True)
class Principal:
    """The subject a token names, and its scope."""

    subject: str
    scope: str

    @property
    def agent_id(self) -> str | None:
        """The agent an ``agent:<id>`` scope is limited to; None for other scopes."""
        return self.scope[len(AGENT_SCOPE) :] if self.scope.startswith(AGENT_SCOPE) else None

    def may_read_prompts(self, agent_id: str) -> bool:
        """A supervisor reads any agent's prompts, an agent its own, a service none."""
        return self.scope == "supervisor" or self.agent_id == agent_id

    @property
    def may_read_accounts(self) -> bool:
        return self.agent_id is None

    @property
    def key(self) -> str:
        """What the API's per-token limits count by."""
        return f"{self.subject}\x1f{self.scope}"


AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")
"""What an agent id in a path or a token scope may be: no separator (``:``, ``/``,
spaces), so an id never names a part of another."""


def is_agent_id(value: str) -> bool:
    """True for a well-formed agent id (:data:`AGENT_ID`)."""
    return AGENT_ID.fullmatch(value) is not None


def _scope(value: object) -> str:
    if isinstance(value, str) and (
        value in SCOPES
        or (value.startswith(AGENT_SCOPE) and is_agent_id(value[len(AGENT_SCOPE) :]))
    ):
        return value
    raise ConfigurationError(
        f"API token scope must be service, supervisor or agent:<id> (letters, digits, "
        f"'._@+-'): {value!r}"
    )


class Tokens:
    """The listed tokens: SHA-256 digest → principal, read again when the file changes
    (a revoked token stops working within ``PORTRAIT_API_TOKENS_CHECK_SECONDS``, no
    restart). A file that turns unreadable or invalid lets no one in until it is fixed:
    revocation must never fail open."""

    def __init__(
        self, entries: list[tuple[bytes, Principal]], path: Path | None = None, every: float = 2.0
    ) -> None:
        self.entries = entries
        self.path = path
        self.every = every
        self._checked = time.monotonic()
        self._stamp = _stamp(path)

    @classmethod
    def load(cls, path: Path | None, every: float = 2.0) -> Tokens:
        """Read ``PORTRAIT_API_TOKENS_FILE`` (no file: no token is valid); a bad file is
        refused at start (``ConfigurationError``)."""
        return cls(_read(path), path, every)

    def _refresh(self) -> None:
        now = time.monotonic()
        if self.path is None or now - self._checked < self.every:
            return
        self._checked = now
        stamp = _stamp(self.path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self.entries = _read(self.path)
            log.info("API tokens read again", extra={"events": len(self.entries)})
        except ConfigurationError as exc:
            self.entries = []
            log.error("API tokens file refused: no token is valid until it is fixed: %s", exc)

    def authenticate(self, token: str | None) -> Principal | None:
        """The principal of a presented token, or None; every entry is compared."""
        if not token:
            return None
        return self.by_digest(token_digest(token))

    def by_digest(self, presented: bytes) -> Principal | None:
        """The principal of a token's SHA-256 digest (a page session keeps only that)."""
        self._refresh()
        found: Principal | None = None
        for digest, principal in self.entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = principal
        return found


def token_digest(token: str) -> bytes:
    """A presented token's SHA-256 digest, as the tokens file lists it."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _stamp(path: Path | None) -> tuple[int, int, int] | None:
    """What tells a changed file: modification time, size and inode (a file replaced
    by a rename has a new inode)."""
    if path is None:
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_mtime_ns, found.st_size, found.st_ino


def _read(path: Path | None) -> list[tuple[bytes, Principal]]:
    if path is None:
        return []
    try:
        listed = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigurationError(f"cannot read the API tokens file {path}: {exc}") from exc
    if not isinstance(listed, list):
        raise ConfigurationError("the API tokens file must hold a JSON list")
    entries = []
    for item in listed:
        try:
            digest = bytes.fromhex(item["token_sha256"])
            principal = Principal(str(item["subject"]), _scope(item["scope"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigurationError(f"bad API token entry: {type(exc).__name__}") from exc
        if len(digest) != hashlib.sha256().digest_size:
            raise ConfigurationError("token_sha256 must be 64 hex digits")
        entries.append((digest, principal))
    return entries


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
