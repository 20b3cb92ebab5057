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
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Protocol

from models.emotion import default_model
from models.encoder import SentenceEncoder, load_encoder
from models.entities import ChineseEntities, EnglishEntities
from models.ocr import ImageError, TextReader, decode_image, image_bytes, image_policy
from models.prosody import fuse
from portrait import metrics
from portrait.config import Settings
from portrait.events import CallSegment, InputEvent
from processors.emotion import EmotionResult, text_to_read
from processors.envelope import Rejection
from processors.facts import (
    OCR_SOURCE,
    TEXT_SOURCE,
    FactCatalogue,
    FactExtractor,
    SourcedFact,
    best_sourced,
    fact_text,
    images_to_read,
)
from processors.intents import IntentMatcher, IntentTable
from processors.keywords import load_stopwords, terms
from streams import model_child
from streams.records import InputRecord

log = logging.getLogger("portrait.reading")


@dataclass(slots=True)
class ReadRequest:
    """One chunk's texts and images, each with the index of its record in the chunk."""

    size: int
    words: list[tuple[int, str]]  # the customer's own words: emotion, keywords, intent
    fact_texts: list[tuple[int, str]]
    images: list[tuple[int, int, str]]  # (record, image number in the message, reference)

    @classmethod
    def of(cls, decoded: Sequence[InputEvent | Rejection], ocr: bool) -> ReadRequest:
        """What there is to read in a chunk of decoded events (rejections have nothing)."""
        words, fact_texts, images = [], [], []
        for index, event in enumerate(decoded):
            if isinstance(event, Rejection):
                continue
            if (text := text_to_read(event)) is not None:
                words.append((index, text))
            if (text := fact_text(event)) is not None:
                fact_texts.append((index, text))
            for number, ref in enumerate(images_to_read(event) if ocr else ()):
                images.append((index, number, ref))
        return cls(len(decoded), words, fact_texts, images)


@dataclass(slots=True)
class Reading:
    """What the models read in a chunk, one entry per record: the emotion, keywords and
    intent of the customer's words, facts from text and images, and unreadable images
    (index, reason); ``seconds``: time per model, for the worker's metrics."""

    emotions: list[EmotionResult | None]
    facts: list[list[SourcedFact]]
    image_errors: list[list[tuple[int, str]]]
    keywords: list[list[str]]
    intents: list[str | None]
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def empty(cls, size: int) -> Reading:
        """Nothing read, for ``size`` records."""
        return cls(
            emotions=[None] * size,
            facts=[[] for _ in range(size)],
            image_errors=[[] for _ in range(size)],
            keywords=[[] for _ in range(size)],
            intents=[None] * size,
        )

    @classmethod
    def joined(cls, parts: Sequence[Reading]) -> Reading:
        """One reading of the records of ``parts``, in order."""
        joined = cls([], [], [], [], [])
        for part in parts:
            joined.emotions.extend(part.emotions)
            joined.facts.extend(part.facts)
            joined.image_errors.extend(part.image_errors)
            joined.keywords.extend(part.keywords)
            joined.intents.extend(part.intents)
            for model, seconds in part.seconds.items():
                joined.seconds[model] = joined.seconds.get(model, 0.0) + seconds
        return joined


class Reader:
    """Every model that reads text or images, loaded once; :meth:`read` a chunk at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.emotion_model = default_model() if settings.emotion_enabled else None
        self.facts = (
            FactExtractor(
                ChineseEntities(), EnglishEntities(), FactCatalogue.load(settings.facts_file)
            )
            if settings.facts_enabled
            else None
        )
        self.ocr = settings.reads_images
        self.stopwords = load_stopwords(settings.stopwords_file)
        self.encoder: SentenceEncoder | None = None
        if self.emotion_model is not None:
            self.encoder = self.emotion_model.encoder
        elif settings.intents_enabled:
            self.encoder = load_encoder(settings.embedding_model)
        self.intents = (
            IntentMatcher(
                IntentTable.load(settings.intents_file),
                self.encoder,
                settings.intent_min_similarity,
            )
            if settings.intents_enabled and self.encoder is not None
            else None
        )
        self.image_policy = image_policy(settings)
        self._text_reader: TextReader | None = None  # loaded with the first image

    def warm(self) -> None:
        """Load the models that otherwise load on first use (entity models, jieba, OCR)."""
        if self.facts is not None:
            self.facts.warm()
        terms("预热", self.stopwords)
        if self.ocr and self._text_reader is None:
            self._text_reader = TextReader()

    def read(self, request: ReadRequest) -> Reading:
        """Emotions, keywords and intents of the customer's words (encoded once for both
        models), facts from text and images."""
        words = request.words
        reading = Reading.empty(request.size)
        embeddings = None
        if words and self.encoder is not None:
            started = time.perf_counter()
            embeddings = self.encoder.encode([text for _, text in words])
            reading.seconds["encoder"] = time.perf_counter() - started
        if words and self.emotion_model is not None:
            started = time.perf_counter()
            results = self.emotion_model.predict([text for _, text in words], embeddings)
            reading.seconds["emotion"] = time.perf_counter() - started
            for (index, _), result in zip(words, results, strict=True):
                reading.emotions[index] = result
        for index, text in words if self.settings.keywords_enabled else ():
            reading.keywords[index] = terms(text, self.stopwords)
        if self.intents is not None and embeddings is not None:
            for (index, _), intent in zip(words, self.intents.match(embeddings), strict=True):
                reading.intents[index] = intent
        if self.facts is not None:
            self._read_facts(request, reading, self.facts)
        return reading

    def _read_facts(self, request: ReadRequest, reading: Reading, facts: FactExtractor) -> None:
        found: list[list[tuple[str, Any]]] = [[] for _ in range(request.size)]
        if request.fact_texts:
            started = time.perf_counter()
            extracted = facts.extract([text for _, text in request.fact_texts])
            reading.seconds["facts"] = time.perf_counter() - started
            for (index, _), those in zip(request.fact_texts, extracted, strict=True):
                found[index] = [(TEXT_SOURCE, fact) for fact in those]
        images: list[tuple[int, Any]] = []
        for index, number, ref in request.images if self.ocr else ():
            try:
                data = image_bytes(ref, self.image_policy)
                images.append((index, decode_image(data, self.image_policy.max_pixels)))
            except ImageError as exc:
                reading.image_errors[index].append((number, str(exc)))
        if images:
            if self._text_reader is None:
                self._text_reader = TextReader()
            started = time.perf_counter()
            read = self._text_reader.read([pixels for _, pixels in images])
            reading.seconds["ocr"] = time.perf_counter() - started
            for (index, _), those in zip(images, facts.extract(read, card=True), strict=True):
                found[index].extend((OCR_SOURCE, fact) for fact in those)
        reading.facts = [best_sourced(sourced) for sourced in found]


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


# the child's own reader, built by its initializer
_child_reader: Reader | None = None


def start_reader() -> None:
    """Load and warm every model once, in the model process (``streams/model_child.py``
    calls this after the death signal)."""
    global _child_reader
    from portrait.config import load_settings
    from portrait.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level)
    _child_reader = Reader(settings)
    _child_reader.warm()


def _read_in_child(request: ReadRequest) -> Reading:
    assert _child_reader is not None, "the model process reads only after its initializer"
    return _child_reader.read(request)


def _ready() -> bool:
    return _child_reader is not None


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
        pickled by name); the default uses the child's :class:`Reader`."""
        self.settings = settings
        self._read = read or _read_in_child
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
        return self._start().submit(_ready)

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
