"""The HTTP API's service and handlers (docs/api.md); the routes that serve them are in
``api/routes.py``.

Read-only, on aiohttp: mounted on the worker's HTTP port (``api.routes.mount``, next to
``/metrics``, ``/livez`` and ``/readyz``) and served alone by ``portrait serve``
(``api/serve.py``), which scales apart from the workers.

Credentials: ``Authorization: Bearer <token>``, or the page's session cookie (set by the
login form or a ``?token=`` link: a browser's EventSource cannot send headers). No or an
unknown token: 401; outside the token's scope: 403, whether or not the customer exists.
Each answer is counted by route (``portrait_api_requests_total{endpoint,code}``); no
token, identifier or profile value is logged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from api.access import Principal, Tokens, bearer, is_agent_id
from api.guard import Limits
from api.prompts import PromptFeed
from api.sessions import SESSION_COOKIE, Sessions
from models.customer_model import CustomerModel
from models.encoder import load_encoder
from models.registry import ModelRegistry, customer_model_in_use
from portrait import metrics
from portrait.config import Settings
from portrait.events import PERSON_KINDS
from processors.document import DocumentSettings, StoredState, document_settings
from processors.identity import is_customer_id
from processors.indicators import Population
from processors.layout import sections_of
from processors.problems import all_problems, most_similar
from processors.relationships import is_connected
from state.store import RedisProfileStore
from state.stores import store_for
from streams.lookup import SeveralPeople, find_customer, get_account, scored_document

Handler = Callable[["Api", web.Request], Awaitable[web.StreamResponse]]

LOOKUP_KINDS = (*PERSON_KINDS[1:], "account_no")
"""Identifiers ``GET /v1/profiles`` finds a profile by (``customer_id`` has its own path)."""
MODEL_REFRESH_SECONDS = 30.0
POPULATION_REFRESH_SECONDS = 2.0
Loaded = tuple[str, StoredState, list[str]]
"""A live customer id, its state and the account numbers it holds (``load_live``)."""
HEARTBEAT_SECONDS = 15.0
MAX_IDENTIFIER_CHARS = 256
STREAMS = frozenset({"/v1/agents/{agent_id}/prompts"})
"""Routes whose answers stay open: they hold a stream slot, not a request slot, and
have no answer deadline."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One route: what the router serves and what the OpenAPI document says of it."""

    method: str
    path: str
    name: str
    summary: str
    handler: Handler
    query: tuple[tuple[str, str], ...] = ()
    """(name, description) of the query parameters."""
    answers: tuple[int, ...] = (200, 401, 403, 404)
    content: str = "application/json"
    schema: str = ""
    """The component schema of a 200 answer (``Profile``, ``Account``, …)."""


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", charset="utf-8"
    )


def error_response(status: int, code: str, **extra: Any) -> web.Response:
    answer = json_response({"error": code, **extra}, status)
    if status == 401:
        answer.headers["WWW-Authenticate"] = 'Bearer realm="portrait"'
    return answer


class Api:
    """What the handlers share: settings, tokens, the store, the scoring model, the feed."""

    def __init__(self, settings: Settings, feed: PromptFeed | None = None) -> None:
        self.settings = settings
        self.tokens = Tokens.load(settings.api_tokens_file, settings.api_tokens_check_seconds)
        self.limits = Limits(settings)
        self.document: DocumentSettings = document_settings(settings)
        self.feed = feed or PromptFeed(settings)
        self._store: RedisProfileStore | None = None
        self._model: tuple[float, CustomerModel] | None = None
        self._population: tuple[float, Population] | None = None
        self._encoder: Any = None

    @property
    def store(self) -> RedisProfileStore:
        if self._store is None:
            self._store = store_for(self.settings)
        return self._store

    @property
    def sessions(self) -> Sessions:
        """The agent page's sign-in sessions (kept in Redis: every process shares them)."""
        settings = self.settings
        return Sessions(self.store.redis, settings.redis_key_prefix, settings.api_session_hours)

    async def startup(self, _app: web.Application) -> None:
        self.feed.start()

    async def cleanup(self, _app: web.Application) -> None:
        self.feed.stop()
        if self._store is not None:
            await self._store.close()

    async def principal(self, request: web.Request) -> Principal | None:
        """The caller: a bearer token, else the page's session cookie (whose token must
        still be listed). An unknown token or session counts towards the address's
        failures."""
        token = bearer(request.headers.get("Authorization"))
        session = request.cookies.get(SESSION_COOKIE)
        if token:
            found = self.tokens.authenticate(token)
        elif session:
            digest = await self.sessions.token_digest(session)
            found = self.tokens.by_digest(digest) if digest is not None else None
        else:
            return None
        if found is None:
            self.limits.failed(request.remote or "")
        return found

    async def model(self) -> CustomerModel:
        """The customer model the workers score with, looked up at most every 30 s."""
        now = time.monotonic()
        if self._model is None or now - self._model[0] > MODEL_REFRESH_SECONDS:
            registry = ModelRegistry(self.store.redis, self.settings.redis_key_prefix)
            pinned = self.settings.customer_model_version
            self._model = (now, await customer_model_in_use(registry, pinned))
        return self._model[1]

    def readable(self, principal: Principal, loaded: Loaded | None) -> bool:
        """Services and supervisors read any profile; an agent a connected customer's,
        and learns nothing of who exists."""
        agent = principal.agent_id
        if agent is None:
            return True
        if loaded is None:
            return False
        since_ms = int((time.time() - self.settings.agent_access_hours * 3600) * 1000)
        return is_connected(loaded[1]["fields"], agent, since_ms)

    async def population(self) -> Population:
        """The spend population the indicators rank against, read at most every 2 s."""
        now = time.monotonic()
        if self._population is None or now - self._population[0] > POPULATION_REFRESH_SECONDS:
            self._population = (now, Population.of(await self.store.population()))
        return self._population[1]

    async def document_of(self, loaded: Loaded) -> dict[str, Any]:
        """The scored document of a loaded customer (its accounts read when it holds any)."""
        customer_id, state, numbers = loaded
        accounts = await self.store.accounts_of(customer_id, numbers) if numbers else {}
        model, population = await self.model(), await self.population()
        return scored_document(customer_id, state, accounts, model, self.document, population)

    async def encode_like(self, problems: list[dict[str, Any]], like: str) -> list[dict[str, Any]]:
        """The 3 problems most like a text (the encoder loads on first use, off the loop),
        under the similarity searches' own limit."""
        loop = asyncio.get_running_loop()
        with self.limits.similar():
            if self._encoder is None:
                model = self.settings.embedding_model
                self._encoder = await loop.run_in_executor(None, load_encoder, model)
            return await loop.run_in_executor(None, most_similar, problems, like, self._encoder, 3)


# --- handlers ------------------------------------------------------------------------------


async def _customer_answer(api: Api, principal: Principal, loaded: Loaded | None) -> web.Response:
    if not api.readable(principal, loaded):
        return error_response(403, "forbidden")
    if loaded is None:
        return error_response(404, "not_found")
    return json_response(await api.document_of(loaded))


def _customer_id(request: web.Request) -> str | None:
    """The path's customer id when it is well formed (``c-`` and 20 hex digits): no other
    spelling — an account's entity id, spaces, another case — reaches the store."""
    given = request.match_info["customer_id"]
    return given if is_customer_id(given) else None


def _agent_id(request: web.Request) -> str | None:
    given = request.match_info["agent_id"]
    return given if is_agent_id(given) else None


async def profile_by_path(api: Api, request: web.Request) -> web.StreamResponse:
    customer_id = _customer_id(request)
    if customer_id is None:
        return error_response(400, "malformed_customer_id")
    loaded = await api.store.load_live(customer_id)
    return await _customer_answer(api, request["principal"], loaded)


async def profile_by_identifier(api: Api, request: web.Request) -> web.StreamResponse:
    principal = request["principal"]
    given = [(k, request.query[k]) for k in LOOKUP_KINDS if request.query.get(k)]
    if len(given) != 1:
        return error_response(400, "one_identifier", kinds=list(LOOKUP_KINDS))
    [(kind, value)] = given
    if len(value) > MAX_IDENTIFIER_CHARS or not value.isprintable():
        return error_response(400, "malformed_identifier")
    try:
        found = await find_customer(api.store, kind, value, api.settings.default_region)
    except SeveralPeople as several:
        if principal.agent_id is not None:
            return error_response(403, "forbidden")
        return error_response(409, "several_people", count=several.count)
    loaded = await api.store.load_live(found) if found else None
    return await _customer_answer(api, principal, loaded)


async def account(api: Api, request: web.Request) -> web.StreamResponse:
    if not request["principal"].may_read_accounts:
        return error_response(403, "forbidden")
    number = request.match_info["account_no"]
    document = await get_account(api.store, number, api.document)
    return json_response(document) if document is not None else error_response(404, "not_found")


async def problems(api: Api, request: web.Request) -> web.StreamResponse:
    customer_id = _customer_id(request)
    if customer_id is None:
        return error_response(400, "malformed_customer_id")
    loaded = await api.store.load_live(customer_id)
    if not api.readable(request["principal"], loaded):
        return error_response(403, "forbidden")
    if loaded is None:
        return error_response(404, "not_found")
    kept = all_problems(sections_of(loaded[1]["fields"]).registers)
    like = request.query.get("like", "").strip()
    return json_response(await api.encode_like(kept, like) if like and kept else kept)


async def current(api: Api, request: web.Request) -> web.StreamResponse:
    agent_id = _agent_id(request)
    if agent_id is None:
        return error_response(400, "malformed_agent_id")
    if not request["principal"].may_read_prompts(agent_id):
        return error_response(403, "forbidden")
    contact = await api.store.current_contact(agent_id)
    found = await api.store.follow(contact.customer_id) if contact else None
    if contact is None or found is None:
        return error_response(404, "no_current_customer")
    at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(contact.at_ms / 1000))
    return json_response({"agent_id": agent_id, "customer_id": found, "ref": contact.ref, "at": at})


async def prompts(api: Api, request: web.Request) -> web.StreamResponse:
    """Server-Sent Events: ``id:`` is the prompt id, ``event: agent.prompt``; the stream
    holds one of the token's stream slots while it is open."""
    agent_id = _agent_id(request)
    if agent_id is None:
        return error_response(400, "malformed_agent_id")
    principal = request["principal"]
    if not principal.may_read_prompts(agent_id):
        return error_response(403, "forbidden")
    with api.limits.stream(principal.key):
        return await _stream(api, request, agent_id)


async def _stream(api: Api, request: web.Request, agent_id: str) -> web.StreamResponse:
    last = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    backlog, queue = api.feed.subscribe(agent_id, last)
    answer = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    metrics.SSE_CLIENTS.inc()
    try:
        await answer.prepare(request)
        await api.limits.write(answer, b"retry: 1000\n\n")
        for prompt in backlog:
            await api.limits.write(answer, _event(prompt.prompt_id, prompt.body))
        while True:
            try:
                prompt = await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)
            except TimeoutError:
                await api.limits.write(answer, b": keep-alive\n\n")
                continue
            await api.limits.write(answer, _event(prompt.prompt_id, prompt.body))
    except (ConnectionResetError, asyncio.CancelledError):
        pass  # the client went away
    finally:
        api.feed.unsubscribe(agent_id, queue)
        metrics.SSE_CLIENTS.dec()
    return answer


def _event(prompt_id: str, body: bytes) -> bytes:
    return b"id: " + prompt_id.encode() + b"\nevent: agent.prompt\ndata: " + body + b"\n\n"
