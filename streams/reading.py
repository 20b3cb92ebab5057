"""What the models read in the customer's words and images, beside the batch pipeline.

The pipeline turns each chunk of decoded events into a :class:`ReadRequest` (plain texts
and image references with their record index) and gets a :class:`Reading` back. The
reading runs on a :class:`ModelProcess` — a child process that loads every model once —
so the sentence encoder, tokenisers and n-gram features never wait for the GIL of the
process that decodes, applies and delivers (measured: on one thread beside the worker's
event loop the model ran at ≈ 0.75× its speed alone). ``PORTRAIT_MODEL_PROCESS=false``
reads on a thread of the worker's own process instead (:class:`ModelThread`: tests, and
small machines where a second copy of the Python runtime does not pay).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import multiprocessing
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Protocol

from models.prosody import fuse
from portrait import metrics
from portrait.config import Settings
from portrait.events import CallSegment, InputEvent
from processors.envelope import Rejection
from streams import model_child
from streams.reader import Reader, Reading, ReadRequest
from streams.records import InputRecord

log = logging.getLogger("portrait.reading")


class ModelRunner(Protocol):
    """Where chunks are read: :class:`ModelThread` or :class:`ModelProcess`."""

    def start(self) -> concurrent.futures.Future[Any]:
        """Load and warm every model; done when the first chunk will not wait on a load."""

    def submit(self, request: ReadRequest) -> concurrent.futures.Future[Reading]: ...

    def close(self) -> None: ...


class ModelThread:
    """Reads chunks in order on one thread of this process."""

    def __init__(self, settings: Settings) -> None:
        self.reader = Reader(settings)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="portrait-model")

    def start(self) -> concurrent.futures.Future[Any]:
        return self._executor.submit(self.reader.warm)

    def submit(self, request: ReadRequest) -> concurrent.futures.Future[Reading]:
        return self._executor.submit(self.reader.read, request)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class ModelProcess:
    """Reads chunks in order in one child process that holds every model.

    Requests and readings cross a pipe pickled (texts in, labels and scores out: small
    beside the model's work). If the child dies (say, killed for memory), the chunks
    it held fail and the pipeline reads them again (``BatchPipeline._reading``): the
    next request starts a new child.
    """

    def __init__(
        self, settings: Settings, read: Callable[[ReadRequest], Reading] | None = None
    ) -> None:
        """``read``: the function the child reads with (a module-level function: it is
        pickled by name); the default uses the child's :class:`~streams.reader.Reader`."""
        self.settings = settings
        self._read = read or model_child.read
        self._pool: ProcessPoolExecutor | None = None

    def _start(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                # spawn: a fork would copy the worker's threads and sockets mid-use
                mp_context=multiprocessing.get_context("spawn"),
                initializer=model_child.start,
                initargs=(os.getpid(), self.settings.as_env()),
            )
        return self._pool

    def start(self) -> concurrent.futures.Future[Any]:
        """Start the child (from this thread: the child ends with it) and answer when its
        models are loaded."""
        return self._start().submit(model_child.ready)

    def submit(self, request: ReadRequest) -> concurrent.futures.Future[Reading]:
        try:
            return self._start().submit(self._read, request)
        except BrokenProcessPool:
            log.error("the model process ended; starting a new one")
            self.close()
            return self._start().submit(self._read, request)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


class GatedRunner:
    """Sends requests to a shared runner one at a time: another user of the same runner
    (the realtime lane) then waits behind at most one of these in the model process's
    queue. The shared runner is started and closed by its owner."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self._waiting: deque[tuple[ReadRequest, concurrent.futures.Future[Reading]]] = deque()
        self._busy = False
        self._lock = threading.RLock()  # a request that completes at once calls back here

    def start(self) -> concurrent.futures.Future[Any]:
        return self.runner.start()

    def submit(self, request: ReadRequest) -> concurrent.futures.Future[Reading]:
        outer: concurrent.futures.Future[Reading] = concurrent.futures.Future()
        with self._lock:
            self._waiting.append((request, outer))
            if not self._busy:
                self._send_next()
        return outer

    def _send_next(self) -> None:
        while self._waiting:
            request, outer = self._waiting.popleft()
            if not outer.set_running_or_notify_cancel():  # dropped while it waited
                continue
            self._busy = True
            try:
                inner = self.runner.submit(request)
            except Exception as exc:
                outer.set_exception(exc)
                continue
            inner.add_done_callback(functools.partial(self._finished, outer=outer))
            return
        self._busy = False

    def _finished(
        self,
        inner: concurrent.futures.Future[Reading],
        *,
        outer: concurrent.futures.Future[Reading],
    ) -> None:
        error = inner.exception() if not inner.cancelled() else RuntimeError("read cancelled")
        if error is not None:
            outer.set_exception(error)
        else:
            outer.set_result(inner.result())
        with self._lock:
            self._send_next()

    def close(self) -> None:
        with self._lock:
            for _, outer in self._waiting:
                outer.cancel()
            self._waiting.clear()


def model_runner(settings: Settings) -> ModelRunner:
    """The configured place to read chunks: a model process or a thread."""
    if settings.model_process:
        return ModelProcess(settings)
    return ModelThread(settings)


# a text any working model reads: tells a failing input from failing models
_PROBE = ReadRequest(1, [(0, "好的，谢谢")], [], [])


def _error(exc: BaseException) -> dict[str, str]:
    return {"error": type(exc).__name__}


@dataclass(slots=True)
class ReadAhead:
    """A batch decoded, chunk by chunk, and handed to the models to read before it is
    applied: the models read it while the batch before it is applied and delivered."""

    records: Sequence[InputRecord]
    chunks: list[Sequence[InputRecord]]
    decoded: list[list[InputEvent | Rejection]]
    readings: list[asyncio.Future[Reading]]

    def cancel(self) -> None:
        """Drop the readings not yet started (a batch given up on)."""
        for reading in self.readings:
            reading.cancel()


class ChunkReading:
    """Hands chunks to a :class:`ModelRunner` from the event loop, and gets every chunk
    read even when the models fail on it."""

    def __init__(self, runner: ModelRunner, reads_images: bool) -> None:
        self.runner = runner
        self.reads_images = reads_images

    def submit(self, decoded: Sequence[InputEvent | Rejection]) -> asyncio.Future[Reading]:
        """The chunk's reading, from the models — or at once when there is nothing to
        read (no round trip to the model process)."""
        request = ReadRequest.of(decoded, self.reads_images)
        loop = asyncio.get_running_loop()
        if request.words or request.fact_texts or request.images:
            return asyncio.wrap_future(self.runner.submit(request), loop=loop)
        nothing = loop.create_future()
        nothing.set_result(Reading.empty(request.size))
        return nothing

    async def settle(
        self, decoded: list[InputEvent | Rejection], reading: asyncio.Future[Reading]
    ) -> Reading:
        """A chunk's reading, also when the models fail on it (an exception, or the model
        process died): the chunk is read again, then event by event. An event the models
        fail on alone is rejected in ``decoded`` (``unprocessable``), so one bad input
        cannot hold the worker up — unless they also fail on a plain probe text: then the
        fault is not the input's, and this raises (the batch is retried). Each customer
        call turn's emotion is fused with its voice; the models' times go to the metrics."""
        try:
            read = await reading
        except Exception as exc:
            log.warning("the models failed on a chunk; reading it again", extra=_error(exc))
            read = await self._again(decoded)
        for model, seconds in read.seconds.items():
            metrics.MODEL_SECONDS.labels(model).observe(seconds)
        for index, event in enumerate(decoded):  # a call turn's emotion, with its voice
            emotion = read.emotions[index]
            if isinstance(event, CallSegment) and emotion is not None:
                read.emotions[index] = fuse(emotion, event.payload.prosody)
        return read

    async def _again(self, decoded: list[InputEvent | Rejection]) -> Reading:
        try:
            return await self.submit(decoded)
        except Exception as exc:
            log.warning(
                "the models failed on a chunk twice; reading it event by event", extra=_error(exc)
            )
        parts = []
        for index, event in enumerate(decoded):
            try:
                parts.append(await self.submit([event]))
            except Exception as exc:
                await asyncio.wrap_future(self.runner.submit(_PROBE))  # fails if models do
                decoded[index] = Rejection(
                    f"unprocessable: the models failed on it ({type(exc).__name__})"
                )
                parts.append(Reading.empty(1))
        return Reading.joined(parts)
