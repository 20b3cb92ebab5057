"""Starting a worker: topics first, then the Faust worker on uvloop with JSON logs."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import faust

from portrait.config import ConfigurationError, Settings, yield_cpu
from portrait.logs import configure_logging
from portrait.metrics import serve_metrics_apart
from streams.app import create_apps
from streams.kafka import ensure_topics
from streams.model_child import die_with_parent
from streams.reading import model_runner

log = logging.getLogger("portrait.worker")


def run_worker(settings: Settings, web: Callable[[faust.App], object] | None = None) -> None:
    """Create missing topics, then run the Faust worker until it is stopped. ``web``
    adds routes to the app that serves HTTP (the CLI mounts the API there)."""
    configure_logging(settings.log_level)
    settings.check_production()
    if settings.lane == "bulk":  # nothing here is urgent
        yield_cpu(settings)
    writable_directories(settings)
    serve_metrics_apart(settings)
    ensure_topics(settings)
    try:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:  # uvloop is optional off Linux/macOS
        pass
    asyncio.set_event_loop(asyncio.new_event_loop())
    # The models load before the worker joins its consumer groups: a worker that took
    # partitions while loading them held those partitions still for seconds after every
    # restart (a second stall after each kill, on top of the dead member's rebalance).
    runner = model_runner(settings)
    runner.start().result()
    apps = create_apps(settings, runner)
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


def writable_directories(settings: Settings) -> None:
    """Make sure every directory the worker writes to can be written, before anything
    starts: the stream framework's data directory (``PORTRAIT_DATA_DIR``) and the
    temporary directory (``TMPDIR``: the keyword segmenter's cache). A read-only root
    filesystem needs both mounted; the error names the path and the setting."""
    for path, setting in (
        (settings.data_dir, "PORTRAIT_DATA_DIR"),
        (Path(tempfile.gettempdir()), "TMPDIR"),
    ):
        try:
            path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=path):
                pass
        except OSError as exc:
            raise ConfigurationError(
                f"cannot write to {path} ({type(exc).__name__}: {exc.strerror}): mount a "
                f"writable volume there or point {setting} at one (docs/operations.md, "
                "Start-up failures)"
            ) from exc


def _start_publisher(settings: Settings) -> subprocess.Popen[bytes] | None:
    """The ``portrait.profiles`` publisher beside a worker that runs the bulk lane
    (``streams/profiles.py``), unless ``PORTRAIT_PROFILES_TOPIC`` is off; it ends with
    the worker, also when the worker is killed."""
    if not settings.profiles_topic or settings.lane == "realtime":
        return None
    # it yields the CPU to the worker itself (it nices itself when it starts)
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
