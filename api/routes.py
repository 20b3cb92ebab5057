"""The HTTP API's routes: each listed once in :data:`ENDPOINTS`, from which both the
router (:func:`mount`) and the OpenAPI 3.1 document (``schemas/openapi.json``,
:func:`openapi_json`) are made, and the guard every request passes (``api/guard.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from api.guard import Refused, harden, refusal
from api.http import (
    LOOKUP_KINDS,
    STREAMS,
    Api,
    Endpoint,
    Handler,
    account,
    current,
    error_response,
    json_response,
    problems,
    profile_by_identifier,
    profile_by_path,
    prompts,
)
from api.openapi import openapi_document
from api.page import add_page_routes
from api.prompts import PromptFeed
from portrait import metrics
from portrait.config import Settings


def openapi_json() -> dict[str, Any]:
    """The OpenAPI document of :data:`ENDPOINTS`."""
    return openapi_document(ENDPOINTS)


async def openapi(_api: Api, _request: web.Request) -> web.StreamResponse:
    return json_response(openapi_json())


IDENTIFIER_QUERY = tuple(
    (kind, f"the customer's {kind} (give exactly one)") for kind in LOOKUP_KINDS
)

ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint(
        "GET",
        "/v1/profiles/{customer_id}",
        "getProfile",
        "The profile of a customer id (a merged-away id answers with the survivor's).",
        profile_by_path,
        schema="Profile",
    ),
    Endpoint(
        "GET",
        "/v1/profiles",
        "findProfile",
        "The profile found by one identifier; 409 when several people hold the account.",
        profile_by_identifier,
        query=IDENTIFIER_QUERY,
        answers=(200, 400, 401, 403, 404, 409),
        schema="Profile",
    ),
    Endpoint(
        "GET",
        "/v1/accounts/{account_no}",
        "getAccount",
        "The account document (not for agent tokens: an account is not one customer).",
        account,
        schema="Account",
    ),
    Endpoint(
        "GET",
        "/v1/profiles/{customer_id}/problems",
        "getProblems",
        "The customer's kept past problems, newest first; ?like= the 3 most similar to a text.",
        problems,
        query=(("like", "rank by embedding similarity to this text"),),
        schema="Problems",
    ),
    Endpoint(
        "GET",
        "/v1/agents/{agent_id}/current",
        "getCurrentCustomer",
        "The customer of the agent's latest call or chat.",
        current,
        schema="CurrentCustomer",
    ),
    Endpoint(
        "GET",
        "/v1/agents/{agent_id}/prompts",
        "streamPrompts",
        "Server-Sent Events: each agent.prompt for the agent as it arrives (id: prompt_id; "
        "Last-Event-ID resumes after that prompt).",
        prompts,
        answers=(200, 401, 403),
        content="text/event-stream",
    ),
    Endpoint(
        "GET",
        "/v1/openapi.json",
        "getOpenApi",
        "This document.",
        openapi,
        answers=(200,),
    ),
)
PUBLIC = frozenset({"/v1/openapi.json"})
UNGUARDED = PUBLIC | {"/agent/static/{name}"}
"""Routes that take no credentials, so no guessing can happen through them."""


def _middleware(api: Api) -> Any:
    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        """Authenticate ``/v1`` requests within the API's limits (``api/guard.py``) and
        count every answer by route."""
        resource = request.match_info.route.resource
        endpoint = resource.canonical if resource is not None else "unmatched"
        started = time.perf_counter()
        code = 500
        try:
            answer = await _guarded(api, request, handler, endpoint)
            code = answer.status
            return answer
        except web.HTTPException as exc:
            code = exc.status
            raise
        finally:
            if endpoint.startswith(("/v1", "/agent")):
                metrics.API_REQUESTS.labels(endpoint, str(code)).inc()
                metrics.API_SECONDS.labels(endpoint).observe(time.perf_counter() - started)

    return guard


async def _guarded(
    api: Api, request: web.Request, handler: Any, endpoint: str
) -> web.StreamResponse:
    try:
        if endpoint.startswith(("/v1", "/agent")) and endpoint not in UNGUARDED:
            api.limits.check_guessing(request.remote or "")
        if not endpoint.startswith("/v1") or endpoint in PUBLIC:
            async with asyncio.timeout(api.limits.timeout):
                return cast(web.StreamResponse, await handler(request))
        principal = await api.principal(request)
        if principal is None:
            return error_response(401, "unauthorized")
        request["principal"] = principal
        if endpoint in STREAMS:
            return cast(web.StreamResponse, await handler(request))
        with api.limits.request(principal.key):
            async with asyncio.timeout(api.limits.timeout):
                return cast(web.StreamResponse, await handler(request))
    except Refused as refused:
        return refusal(refused)
    except TimeoutError:
        return error_response(503, "timeout")


def mount(app: web.Application, settings: Settings, feed: PromptFeed | None = None) -> Api:
    """Add the API and the agent page to an aiohttp application (the worker's or
    ``portrait serve``'s); the prompt feed starts and stops with it."""
    api = Api(settings, feed)
    app.middlewares.append(_middleware(api))
    app.on_response_prepare.append(harden)
    for endpoint in ENDPOINTS:
        app.router.add_route(endpoint.method, endpoint.path, _bound(api, endpoint.handler))
    add_page_routes(app, api)
    app.on_startup.append(api.startup)
    app.on_cleanup.append(api.cleanup)
    return api


def _bound(api: Api, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await handler(api, request)

    return handle
