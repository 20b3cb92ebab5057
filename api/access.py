"""Who may read what (DESIGN.md "Reading profiles: HTTP API"): bearer tokens and scopes.

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
from dataclasses import dataclass
from pathlib import Path

import orjson

from portrait.config import ConfigurationError

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


def _scope(value: object) -> str:
    if isinstance(value, str) and (
        value in SCOPES or (value.startswith(AGENT_SCOPE) and len(value) > len(AGENT_SCOPE))
    ):
        return value
    raise ConfigurationError(
        f"API token scope must be service, supervisor or agent:<id>: {value!r}"
    )


class Tokens:
    """The listed tokens: SHA-256 digest → principal."""

    def __init__(self, entries: list[tuple[bytes, Principal]]) -> None:
        self.entries = entries

    @classmethod
    def load(cls, path: Path | None) -> Tokens:
        """Read ``PORTRAIT_API_TOKENS_FILE`` (no file: no token is valid)."""
        if path is None:
            return cls([])
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
        return cls(entries)

    def authenticate(self, token: str | None) -> Principal | None:
        """The principal of a presented token, or None; every entry is compared."""
        if not token:
            return None
        presented = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: Principal | None = None
        for digest, principal in self.entries:
            if hmac.compare_digest(presented, digest) and found is None:
                found = principal
        return found


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
