"""The model process: it reads what the in-process model thread reads, a killed one is
replaced while the batch is retried, and it never outlives the worker that started it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import orjson
import pytest

from portrait import metrics
from portrait.config import Settings
from processors.envelope import Rejection, decode_event
from state.stores import store_for
from streams import model_child
from streams.pipeline import BatchPipeline
from streams.reader import Reader, Reading, ReadRequest
from streams.reading import ModelProcess, ModelThread
from streams.records import InputRecord
from streams.testing import ListSink
from tests.support.envelopes import event
from tests.support.images import EN_CARD, card_b64


def chat(eid: str, text: str | None, images: list[str] | None = None) -> dict[str, Any]:
    payload = {
        "conversation_id": "c-r",
        "direction": "inbound",
        "employee_id": "emp-1",
        "text": text,
        "images": images or [],
    }
    return event(
        eid, "chat.message", "2026-11-20T10:00:00+08:00", "wecom", {"im_id": "wx-r"}, payload
    )


CHUNK = [
    chat("r1", "你们又停电了，我要投诉！我的手机号是13912345678"),
    chat("r2", "Thanks a lot, the engineer fixed it quickly."),
    chat("r3", None, images=[card_b64(EN_CARD), "bm90IGFuIGltYWdl"]),
    {"not": "an event"},
    chat("r4", "请问这个月的账单什么时候出？"),
]


def decoded() -> list[Any]:
    return [decode_event(orjson.dumps(raw), 256 * 1024) for raw in CHUNK]


def test_the_model_process_reads_what_the_model_thread_reads() -> None:
    settings = Settings()
    request = ReadRequest.of(decoded(), ocr=True)
    thread, process = ModelThread(settings), ModelProcess(settings)
    try:
        here = thread.submit(request).result()
        there = process.submit(request).result()
    finally:
        thread.close()
        process.close()
    assert there.emotions == here.emotions
    assert there.keywords == here.keywords
    assert there.intents == here.intents
    assert there.facts == here.facts
    assert there.image_errors == here.image_errors
    # and what they read is the chunk's, record by record
    assert [e.label if e else None for e in there.emotions] == [
        "negative",
        "positive",
        None,
        None,
        "neutral",
    ]
    assert ("phone", "13912345678") in {(f.name, f.value) for _, f in there.facts[0]}
    assert there.facts[2], "the card image's facts"
    assert there.image_errors[2] == [(1, "image_undecodable")]
    assert isinstance(decoded()[3], Rejection) and there.facts[3] == []
    assert {"encoder", "emotion", "facts", "ocr"} <= set(there.seconds)


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in {"Z", "X"}  # a zombie has ended; only its exit status is left


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.05)
    return False


def test_a_killed_model_process_is_replaced_and_the_batch_retried(
    redis_settings: Settings,
) -> None:
    settings = redis_settings.model_copy(
        update={"model_process": True, "facts_enabled": False, "scores_enabled": False}
    )

    async def scenario() -> tuple[int, int, ListSink]:
        store = store_for(settings)
        pipeline = BatchPipeline.for_settings(settings, store)
        models = pipeline.reading.runner
        assert isinstance(models, ModelProcess)
        try:
            await pipeline.start_models()
            first = await asyncio.wrap_future(models._start().submit(os.getpid))
            os.kill(first, signal.SIGKILL)
            assert _wait_gone(first)
            sink = ListSink()
            batch = [
                InputRecord("t.chat", 0, i, b"k", orjson.dumps(raw))
                for i, raw in enumerate(CHUNK[:2])
            ]
            await pipeline.run(batch, sink.deliver)
            second = await asyncio.wrap_future(models._start().submit(os.getpid))
        finally:
            pipeline.close()
            await store.close()
        return first, second, sink

    first, second, sink = asyncio.run(scenario())
    assert second != first
    # the retried batch was read: each message's emotion reached the profile
    lasts = [
        change["new"]["last"]
        for e in sink.events()
        if e["type"] == "profile.changed"
        for change in e["changed"]
        if change["field"] == "emotion"
    ]
    assert lasts == ["negative", "positive"]


def test_the_model_process_ends_with_the_process_that_started_it() -> None:
    script = (
        "import os, sys, time\n"
        "from portrait.config import Settings\n"
        "from streams.reading import ModelProcess\n"
        "models = ModelProcess(Settings(emotion_enabled=False, facts_enabled=False,"
        " intents_enabled=False))\n"
        "print(models._start().submit(os.getpid).result(), flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not _gone(child)
        parent.kill()  # SIGKILL: no exit handler runs
        parent.wait(10)
        assert _wait_gone(child), "the model process outlived the worker"
    finally:
        if parent.poll() is None:
            parent.kill()


_STARTING = (
    "import os, sys, time\n"
    "from multiprocessing import resource_tracker\n"
    "from portrait.config import Settings\n"
    "from streams.reading import ModelProcess\n"
    "models = ModelProcess(Settings())\n"
    "pool = models._start()\n"
    "pool.submit(os.getpid)\n"
    "[child] = list(pool._processes)\n"
    "print(child, resource_tracker._resource_tracker._pid, flush=True)\n"
    "time.sleep(60)\n"
)


@pytest.mark.parametrize("after_seconds", [0.0, 0.3, 1.0, 2.5])
def test_a_worker_killed_while_its_model_process_starts_leaves_nothing_behind(
    after_seconds: float,
) -> None:
    """Killed before the child asked for the death signal (interpreter start, imports),
    or while it loads the models: the child and the resource tracker end within 2 s."""
    parent = subprocess.Popen([sys.executable, "-c", _STARTING], stdout=subprocess.PIPE)
    try:
        assert parent.stdout is not None
        child, tracker = (int(pid) for pid in parent.stdout.readline().split())
        time.sleep(after_seconds)
        parent.kill()  # SIGKILL: no exit handler runs
        parent.wait(10)
        assert _wait_gone(child, 2.0), "the model process outlived the worker"
        assert _wait_gone(tracker, 2.0), "the resource tracker outlived the worker"
    finally:
        if parent.poll() is None:
            parent.kill()


POISON = "POISON-PILL 这句话让模型出错"


def _poisoned(request: ReadRequest) -> bool:
    return any(POISON in text for _, text in request.words)


def crash_on_poison(request: ReadRequest) -> Reading:
    """The model process's read, except that it dies (as by a segfault) on the poison."""
    if _poisoned(request):
        os.kill(os.getpid(), signal.SIGKILL)
    return model_child.read(request)


def _batch_with_poison() -> list[InputRecord]:
    texts = ["谢谢你们，问题解决了", POISON, "The bill is wrong again, I'm furious."]
    return [
        InputRecord("t.chat", 0, i, b"k", orjson.dumps(chat(f"p{i}", text)))
        for i, text in enumerate(texts)
    ]


def _last_emotions(sink: ListSink) -> list[str]:
    return [
        change["new"]["last"]
        for e in sink.events()
        if e["type"] == "profile.changed"
        for change in e["changed"]
        if change["field"] == "emotion"
    ]


def _on_thread(redis_settings: Settings) -> tuple[BatchPipeline, Reader]:
    """A pipeline whose models read on a thread (facts off), and the reader to break."""
    settings = redis_settings.model_copy(update={"facts_enabled": False})
    pipeline = BatchPipeline.for_settings(settings, store_for(settings))
    runner = pipeline.reading.runner
    assert isinstance(runner, ModelThread)
    return pipeline, runner.reader


def _closing(pipeline: BatchPipeline, work: Awaitable[Any]) -> None:
    """Run ``work``, then close the pipeline and its store."""

    async def scenario() -> None:
        try:
            await asyncio.wait_for(work, 120)
        finally:
            pipeline.close()
            await pipeline.store.close()

    asyncio.run(scenario())


def _run_poisoned(pipeline: BatchPipeline, sink: ListSink) -> None:
    _closing(pipeline, pipeline.run(_batch_with_poison(), sink.deliver))


def _assert_only_the_poison_rejected(sink: ListSink) -> None:
    dlq = [e for e in sink.events() if e["type"] == "dlq.record"]
    assert [(d["offset"], d["reason"].split(":")[0]) for d in dlq] == [(1, "unprocessable")]
    assert POISON.encode() not in orjson.dumps(dlq[0]["reason"])
    assert _last_emotions(sink) == ["positive", "negative"]  # the others were read


def test_an_input_the_models_fail_on_goes_to_the_dlq_and_the_rest_applies(
    redis_settings: Settings,
) -> None:
    pipeline, reader = _on_thread(redis_settings)
    read = reader.read

    def failing(request: ReadRequest) -> Reading:
        if _poisoned(request):
            raise ValueError("tokeniser bug")
        return read(request)

    reader.read = failing  # type: ignore[method-assign]
    dropped = metrics.DLQ.labels("unprocessable")._value.get()
    sink = ListSink()
    _run_poisoned(pipeline, sink)
    _assert_only_the_poison_rejected(sink)
    assert metrics.DLQ.labels("unprocessable")._value.get() == dropped + 1


def test_an_input_that_kills_the_model_process_goes_to_the_dlq(redis_settings: Settings) -> None:
    settings = redis_settings.model_copy(
        update={"model_process": True, "facts_enabled": False, "scores_enabled": False}
    )
    pipeline = BatchPipeline.for_settings(settings, store_for(settings))
    pipeline.reading.runner.close()
    pipeline.reading.runner = ModelProcess(settings, read=crash_on_poison)
    sink = ListSink()
    _run_poisoned(pipeline, sink)
    _assert_only_the_poison_rejected(sink)


def test_models_that_fail_on_everything_fail_the_batch_and_reject_nothing(
    redis_settings: Settings,
) -> None:
    pipeline, reader = _on_thread(redis_settings)

    def broken(_request: ReadRequest) -> Reading:
        raise OSError("model file unreadable")

    reader.read = broken  # type: ignore[method-assign]
    with pytest.raises(OSError):
        _closing(pipeline, pipeline.prepare(_batch_with_poison()))
