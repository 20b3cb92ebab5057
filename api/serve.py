"""``portrait serve``: the HTTP API and the agent page alone, scaled apart from the workers.

Read-only: it reads profiles from Redis and prompts from the prompts topic, and writes
nothing. ``/metrics``, ``/livez`` and ``/readyz`` (Redis answers and the prompt feed has
its partitions) as on a worker.
"""

from __future__ import annotations

import asyncio
import gc
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.http import Api
from api.routes import mount
from portrait.config import Settings
from portrait.logs import configure_logging
from portrait.metrics import serve_metrics_apart

log = logging.getLogger("portrait.api")


def application(settings: Settings) -> tuple[web.Application, Api]:
    """The serving application: the API, the page and the probes."""
    app = web.Application()
    api = mount(app, settings)

    async def metrics_view(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def livez(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        checks = {"redis": False, "prompts": api.feed.assigned.is_set()}
        try:
            checks["redis"] = await api.store.ping()
        except Exception:  # a probe reports, it does not raise
            checks["redis"] = False
        ready = all(checks.values())
        return web.json_response(
            {"status": "ready" if ready else "not_ready", "checks": checks},
            status=200 if ready else 503,
        )

    if settings.metrics_port is None:  # else on that port alone (serve below)
        app.router.add_get("/metrics", metrics_view)
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    return app, api


def serve(settings: Settings, port: int | None = None) -> None:
    """Serve until stopped (SIGINT/SIGTERM)."""
    configure_logging(settings.log_level)
    settings.check_production()
    serve_metrics_apart(settings)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # uvloop is optional off Linux/macOS
        pass
    app, _ = application(settings)
    # Answers allocate many short-lived objects; the default young-generation threshold
    # (700) collects far more often than it frees anything (as in the worker).
    gc.set_threshold(50_000, 20, 100)
    log.info("serving the API", extra={"reason": f"port {port or settings.http_port}"})
    web.run_app(
        app,
        host=settings.bind_host,
        port=port or settings.http_port,
        access_log=None,
        print=None,
        keepalive_timeout=settings.api_request_timeout_seconds,
    )
