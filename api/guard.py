"""What bounds the HTTP API and hardens its answers (OWASP's REST and headers advice).

- **Limits**: requests answered at once and live prompt streams held open, per token and
  in all (``PORTRAIT_API_MAX_*``); past a limit the answer is 429 with ``Retry-After``,
  and nothing waits in a queue that a flood could grow. Similarity searches (each
  encodes text) have a limit of their own.
- **Slow clients**: every request has ``PORTRAIT_API_REQUEST_TIMEOUT_SECONDS`` to arrive
  and be answered; a stream's write that a client does not take within that time ends
  the stream.
- **Guessing**: a client address that presents more than ``PORTRAIT_API_AUTH_FAILURES``
  unknown tokens in a minute is answered 429 until the minute ends, before its token is
  even looked at.
- **Headers** on every answer: a Content-Security-Policy with no inline script and no
  framing, ``nosniff``, no referrer to other sites, and ``Cache-Control: no-store`` on
  everything but the page's static files (profiles are personal data: no cache keeps
  them).

Refusals are counted in ``portrait_api_refused_total{reason}``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from aiohttp import web

from portrait import metrics
from portrait.config import Settings

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on
    # the login form's POST, and the form's origin check could not tell this site
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
CACHEABLE_PREFIX = "/agent/static/"
"""The only answers a cache may keep: the page's script and style."""
FAILURE_WINDOW_SECONDS = 60
TRACKED_ADDRESSES = 10_000
"""Client addresses whose failures are remembered (the oldest forgotten first), so a
flood from many addresses cannot grow the table without bound."""


class Refused(Exception):
    """A request past a limit: answered 429 with ``Retry-After``."""

    def __init__(self, reason: str, retry_after: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class _Gauge:
    """Holders of one kind of slot: in all and per token."""

    total: int
    per_token: int
    held: int = 0

    def __post_init__(self) -> None:
        self.by_token: Counter[str] = Counter()

    @contextmanager
    def hold(self, token: str, reason: str) -> Iterator[None]:
        if self.held >= self.total:
            raise Refused(f"{reason}_total")
        if self.by_token[token] >= self.per_token:
            raise Refused(f"{reason}_per_token")
        self.held += 1
        self.by_token[token] += 1
        try:
            yield
        finally:
            self.held -= 1
            self.by_token[token] -= 1
            if not self.by_token[token]:
                del self.by_token[token]


class Limits:
    """The API's bounds for one serving process (module docstring)."""

    def __init__(self, settings: Settings) -> None:
        self.timeout = settings.api_request_timeout_seconds
        self.requests = _Gauge(settings.api_max_requests, settings.api_max_requests_per_token)
        self.streams = _Gauge(settings.api_max_streams, settings.api_max_streams_per_token)
        self.similarity = _Gauge(settings.api_max_similarity, settings.api_max_similarity)
        self.failures_allowed = settings.api_auth_failures
        self._failures: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def request(self, token: str) -> AbstractContextManager[None]:
        """A slot for one request of a token (``Refused`` when none is free)."""
        return self.requests.hold(token, "requests")

    def stream(self, token: str) -> AbstractContextManager[None]:
        """A slot for one live stream of a token."""
        return self.streams.hold(token, "streams")

    def similar(self) -> AbstractContextManager[None]:
        """A slot for one similarity search."""
        return self.similarity.hold("", "similarity")

    def check_guessing(self, address: str) -> None:
        """``Refused`` while an address is past its failed tokens for the minute."""
        started, count = self._failures.get(address, (0.0, 0))
        left = started + FAILURE_WINDOW_SECONDS - time.monotonic()
        if count >= self.failures_allowed and left > 0:
            raise Refused("auth_failures", max(1, int(left + 0.999)))

    def failed(self, address: str) -> None:
        """Note one unknown token from an address."""
        now = time.monotonic()
        started, count = self._failures.pop(address, (now, 0))
        if now - started >= FAILURE_WINDOW_SECONDS:
            started, count = now, 0
        self._failures[address] = (started, count + 1)
        while len(self._failures) > TRACKED_ADDRESSES:
            self._failures.popitem(last=False)

    async def write(self, answer: web.StreamResponse, data: bytes) -> None:
        """One write to a stream, given up (``ConnectionResetError``) when the client
        does not take it in time."""
        try:
            await asyncio.wait_for(answer.write(data), self.timeout)
        except TimeoutError as exc:
            raise ConnectionResetError("slow client") from exc


def refusal(refused: Refused) -> web.Response:
    """The 429 answer of a refusal, counted by reason."""
    metrics.API_REFUSED.labels(refused.reason).inc()
    return web.json_response(
        {"error": "too_many_requests", "reason": refused.reason},
        status=429,
        headers={"Retry-After": str(refused.retry_after)},
    )


async def harden(request: web.Request, answer: web.StreamResponse) -> None:
    """``on_response_prepare``: the security headers on every answer (also errors and
    streams), and no caching of anything but the page's static files."""
    for name, value in SECURITY_HEADERS.items():
        answer.headers.setdefault(name, value)
    if not request.path.startswith(CACHEABLE_PREFIX):
        answer.headers["Cache-Control"] = "no-store"
