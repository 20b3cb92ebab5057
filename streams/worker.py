"""Starting a worker: topics first, then the Faust worker on uvloop with JSON logs."""

from __future__ import annotations

import asyncio
import gc
import logging

import faust

from portrait.config import Settings
from portrait.logs import configure_logging
from streams.app import create_app
from streams.kafka import ensure_topics

log = logging.getLogger("portrait.worker")


def run_worker(settings: Settings) -> None:
    """Create missing topics, then run the Faust worker until it is stopped."""
    configure_logging(settings.log_level)
    ensure_topics(settings)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # uvloop is optional off Linux/macOS
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())
    app = create_app(settings)
    # Batches allocate many short-lived objects; collecting the young generation every
    # 700 allocations (the default) spends more time scanning than it frees.
    gc.set_threshold(50_000, 20, 100)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        override_logging=False,
        quiet=True,
        redirect_stdouts=False,
    )
    worker.execute_from_commandline()
