"""The agent page's sign-in sessions, and the login form's protection against cross-site
requests.

A browser's EventSource cannot send an ``Authorization`` header, so the page signs in
once and keeps a cookie. The cookie holds a random session id (32 bytes), never the
bearer token: Redis keeps, under the id's SHA-256, the digest of the token that opened
the session, for ``PORTRAIT_API_SESSION_HOURS``. Every request with the cookie is checked
against the tokens file as it is now, so revoking a token ends its sessions too; a
session is shared by every serving process (they share Redis).

The login form carries a one-time value that must equal a cookie set with the form
(double-submit), and a request whose ``Origin`` names another site is refused: another
site cannot sign a browser in under a token of its choosing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from aiohttp import web

SESSION_COOKIE = "portrait_session"
CSRF_COOKIE = "portrait_csrf"
SESSION_KEY = "session:"
"""``{P}session:<sha256 of the id>`` → the hex digest of the token that opened it."""


class Sessions:
    """Page sessions in Redis (module docstring)."""

    def __init__(self, redis: Any, prefix: str, hours: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.seconds = max(1, int(hours * 3600))

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}{SESSION_KEY}{hashlib.sha256(session_id.encode()).hexdigest()}"

    async def open(self, token_digest: bytes) -> str:
        """A new session for a token (by its digest); returns the id for the cookie."""
        session_id = secrets.token_urlsafe(32)
        await self.redis.set(self._key(session_id), token_digest.hex(), ex=self.seconds)
        return session_id

    async def token_digest(self, session_id: str | None) -> bytes | None:
        """The digest of the token a live session was opened with, or None."""
        if not session_id or len(session_id) > 128:
            return None
        found = await self.redis.get(self._key(session_id))
        if not found:
            return None
        try:
            return bytes.fromhex(found.decode() if isinstance(found, bytes) else found)
        except ValueError:
            return None

    async def close(self, session_id: str | None) -> None:
        """End a session (sign-out)."""
        if session_id and len(session_id) <= 128:
            await self.redis.delete(self._key(session_id))


def set_session(answer: web.StreamResponse, session_id: str, seconds: int, secure: bool) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, for the session's life."""
    answer.set_cookie(
        SESSION_COOKIE,
        session_id,
        httponly=True,
        samesite="Strict",
        path="/",
        secure=secure,
        max_age=seconds,
    )


def new_form_token(answer: web.StreamResponse, secure: bool) -> str:
    """A fresh double-submit value: set as a cookie on ``answer``, returned for the form."""
    value = secrets.token_urlsafe(24)
    answer.set_cookie(
        CSRF_COOKIE, value, httponly=True, samesite="Strict", path="/agent", secure=secure
    )
    return value


def same_site_form(request: web.Request, posted: str) -> bool:
    """True when a posted form comes from this site: its value equals the cookie set
    with the form, and an ``Origin`` header (browsers send one on POST) names this host."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not posted or not hmac.compare_digest(cookie, posted):
        return False
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":  # not told (a no-referrer policy sends "null")
        return True
    return origin.split("://", 1)[-1] == request.host
