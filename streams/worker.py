"""Starting a worker: topics first, then the Faust worker on uvloop with JSON logs."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable

import faust

from portrait.config import Settings
from portrait.logs import configure_logging
from streams.app import create_apps
from streams.kafka import ensure_topics
from streams.model_child import die_with_parent

log = logging.getLogger("portrait.worker")


def run_worker(settings: Settings, web: Callable[[faust.App], object] | None = None) -> None:
    """Create missing topics, then run the Faust worker until it is stopped. ``web``
    adds routes to the app that serves HTTP (the CLI mounts the API there)."""
    configure_logging(settings.log_level)
    settings.erasure_hash_key()  # the production profile refuses to run without a key
    ensure_topics(settings)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # uvloop is optional off Linux/macOS
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())
    apps = create_apps(settings)
    if web is not None:
        web(apps[0])
    # Batches allocate many short-lived objects; collecting the young generation every
    # 700 allocations (the default) spends more time scanning than it frees.
    gc.set_threshold(50_000, 20, 100)
    # The consumer thread (aiokafka) needs the GIL to hand records over while the event
    # loop works through a bulk batch; switching every 1 ms instead of 5 ms took the
    # prompt p99 behind a 50k backlog from 0.96 s to 0.62 s (portrait bench --prompts
    # --backlog 50000 --rate 10), the drain rate unchanged.
    sys.setswitchinterval(0.001)
    worker = faust.Worker(
        *apps,
        loglevel=settings.log_level,
        override_logging=False,
        quiet=True,
        redirect_stdouts=False,
    )
    publisher = _start_publisher(settings)
    try:
        worker.execute_from_commandline()
    finally:
        if publisher is not None and publisher.poll() is None:
            publisher.terminate()
            try:
                publisher.wait(10)
            except subprocess.TimeoutExpired:
                publisher.kill()


def _start_publisher(settings: Settings) -> subprocess.Popen[bytes] | None:
    """The ``portrait.profiles`` publisher beside a worker that runs the bulk lane
    (``streams/profiles.py``), unless ``PORTRAIT_PROFILES_TOPIC`` is off; it ends with
    the worker, also when the worker is killed."""
    if not settings.profiles_topic or settings.lane == "realtime":
        return None
    return subprocess.Popen(
        [sys.executable, "-m", "portrait.cli", "publish-profiles"],
        preexec_fn=die_with_parent,  # only asks for the parent-death signal
    )


def run_workers(settings: Settings, processes: int) -> int:
    """Run ``processes`` workers in one consumer group until stopped; returns the exit code.

    Each is a separate ``portrait worker`` process (its own GIL) on ``http_port + i``;
    SIGTERM and SIGINT are passed on to all of them.
    """
    children = []
    for index in range(processes):
        env = dict(os.environ, PORTRAIT_HTTP_PORT=str(settings.http_port + index))
        children.append(subprocess.Popen([sys.executable, "-m", "portrait.cli", "worker"], env=env))

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)
