"""Starting a worker: topics first, then the Faust worker on uvloop with JSON logs."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import faust
from prometheus_client import REGISTRY

from portrait.config import ConfigurationError, Settings, yield_cpu
from portrait.logs import configure_logging
from portrait.metrics import WithCompanion, serve_metrics_apart
from streams.app import Companion, create_apps
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
    ensure_topics(settings)
    companion = bulk_process = None
    if settings.lane == "all" and settings.lane_processes:
        bulk_process, companion = _start_bulk_process(settings)
        settings = settings.model_copy(update={"lane": "realtime"})
    serve_metrics_apart(settings, REGISTRY if companion is None else companion.metrics)
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
    apps = create_apps(settings, runner, companion)
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
    bulk_ended = None if bulk_process is None else _end_with(bulk_process)
    try:
        worker.execute_from_commandline()
    finally:
        if bulk_ended is not None:
            bulk_ended.set()
        for child in (publisher, bulk_process):
            if child is not None and child.poll() is None:
                child.terminate()
                try:
                    child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()


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


def _start_bulk_process(settings: Settings) -> tuple[subprocess.Popen[bytes], Companion]:
    """The bulk lane of a ``--lane all`` worker, in a process of its own: a bulk batch
    then never holds the realtime lane's event loop, and the bulk process lowers its own
    priority (``PORTRAIT_BACKGROUND_NICE``), so on a shared host the operating system
    runs call turns first. Measured (``portrait bench --prompts --backlog 50000``):
    segment → prompt p99 229 ms with both lanes in one process, 84–112 ms apart. It
    listens on a free loopback port, read by this process for its readiness and its
    metrics, and ends with this worker."""
    port = _free_loopback_port()
    env = dict(
        os.environ,
        PORTRAIT_LANE="bulk",
        PORTRAIT_HTTP_PORT=str(port),
        PORTRAIT_HTTP_BIND="127.0.0.1",
    )
    env.pop("PORTRAIT_METRICS_PORT", None)  # on its HTTP port, read through this one
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.worker"],
        env=env,
        preexec_fn=die_with_parent,  # only asks for the parent-death signal
    )
    companion = Companion(
        readyz=f"http://127.0.0.1:{port}/readyz",
        metrics=WithCompanion(f"http://127.0.0.1:{port}/metrics", "realtime", "bulk"),
    )
    return process, companion


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _end_with(child: subprocess.Popen[bytes]) -> threading.Event:
    """Stop this worker when ``child`` ends on its own (half a worker must not look
    alive to its supervisor, which restarts the whole of it); setting the returned
    event first says its end is expected."""
    expected = threading.Event()

    def watch() -> None:
        code = child.wait()
        if not expected.is_set():
            log.error("the bulk lane's process ended; stopping", extra={"exit_code": code})
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="bulk-lane-watch", daemon=True).start()
    return expected


def _start_publisher(settings: Settings) -> subprocess.Popen[bytes] | None:
    """The ``portrait.profiles`` publisher beside a worker that runs the bulk lane
    (``streams/profiles.py``), unless ``PORTRAIT_PROFILES_TOPIC`` is off; it ends with
    the worker, also when the worker is killed."""
    if not settings.profiles_topic or settings.lane == "realtime":
        return None
    # it yields the CPU to the worker itself (it nices itself when it starts)
    return subprocess.Popen(
        [sys.executable, "-m", "streams.profiles"],
        preexec_fn=die_with_parent,  # only asks for the parent-death signal
    )


if __name__ == "__main__":  # the bulk lane of a default worker (_start_bulk_process)
    from portrait.config import load_settings

    run_worker(load_settings())
