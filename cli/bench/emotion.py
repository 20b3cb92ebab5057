"""``portrait bench --emotion``: the emotion model alone vs the worker reading emotion.

Both measured in one run on the same chat texts: (1) the model in this process, batched
like the worker batches it — messages/s and ms per message on one core; (2) the worker on
the embedded stack consuming the same texts as inbound ``chat.message`` events, events/s
from first to last output. The worker also validates, updates Redis and produces, so its
rate over the model's rate says how much of the worker's time the model leaves to the rest.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import orjson

from cli.bench import _fill, _settings_for, _subprocess_contender
from cli.stack import LocalStack, on_free_ports
from models.emotion import EmotionModel
from models.train_emotion import DATA, load_rows
from portrait.config import Settings
from streams.records import OutputRecord


def chat_events(count: int, texts: list[str], customers: int = 2000) -> list[OutputRecord]:
    """``count`` inbound chat messages cycling through ``texts``."""
    out = []
    for i in range(count):
        conversation = f"conv-{i % customers:05d}"
        body = {
            "event_id": f"em-{i:07d}",
            "type": "chat.message",
            "occurred_at": f"2026-11-0{1 + i % 9}T1{i % 10}:00:00+08:00",
            "source": "wecom",
            "customer": {"im_id": f"wx-{i % customers:05d}"},
            "payload": {
                "conversation_id": conversation,
                "direction": "inbound",
                "employee_id": "emp-1",
                "text": texts[i % len(texts)],
            },
        }
        out.append(OutputRecord("", conversation.encode(), orjson.dumps(body)))
    return out


# the emotion model's own cost in the worker: the other readers of chat text switched off
EMOTION_ONLY = {
    "PORTRAIT_FACTS_ENABLED": "false",
    "PORTRAIT_KEYWORDS_ENABLED": "false",
    "PORTRAIT_INTENTS_ENABLED": "false",
}


def run_emotion_bench(base: Settings, messages: int, as_json: bool) -> int:
    """Model alone and worker with the model, from one run; prints both and the ratio."""
    texts = [row["text"] for row in load_rows(DATA)]
    model = EmotionModel()
    model.predict(texts[:50])  # warm the encoder
    chunk = base.redis_chunk_events
    sample = [texts[i % len(texts)] for i in range(min(messages, 5000))]
    started = time.perf_counter()
    for start in range(0, len(sample), chunk):
        model.predict(sample[start : start + chunk])
    model_seconds = time.perf_counter() - started
    model_rate = len(sample) / model_seconds

    base = on_free_ports(base)
    stack = LocalStack(base)
    try:
        stack.up()
        quiet = {"PORTRAIT_LOG_LEVEL": "WARNING"}
        measured = []
        # the worker reading emotion only, then the worker with every reader on
        for name, env in (("emotion", quiet | EMOTION_ONLY), ("understanding", quiet)):
            settings = _settings_for(base, name)
            _fill(settings, settings.topic("chat"), chat_events(messages, texts))
            measured.append(
                _subprocess_contender(
                    f"portrait-{name}",
                    settings,
                    [sys.executable, "-m", "cli", "worker"],
                    settings.topic("profile-changes"),
                    messages,
                    env,
                )
            )
    finally:
        stack.down()
    worker, full = measured
    summary: dict[str, Any] = {
        "messages": messages,
        "model_messages_per_second": round(model_rate, 1),
        "model_ms_per_message": round(1000 * model_seconds / len(sample), 3),
        "worker_messages_per_second": round(worker.rate, 1),
        "worker_vs_model": round(worker.rate / model_rate, 3),
        "worker_all_models_messages_per_second": round(full.rate, 1),
        "worker_all_models_vs_model": round(full.rate / model_rate, 3),
        "lossless": worker.unique == messages and full.unique == messages,
    }
    _print(summary, chunk, as_json)
    return 0 if summary["lossless"] else 1


def _print(summary: dict[str, Any], chunk: int, as_json: bool) -> None:
    if as_json:
        print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    else:
        model_rate = summary["model_messages_per_second"]
        worker_rate = summary["worker_messages_per_second"]
        full_rate = summary["worker_all_models_messages_per_second"]
        print(
            f"{summary['messages']} inbound chat messages with text, batches of {chunk}, one core"
        )
        print(
            f"  model alone      {model_rate:8.0f} messages/s  "
            f"({summary['model_ms_per_message']} ms per message)"
        )
        print(
            f"  worker + model   {worker_rate:8.0f} messages/s  "
            f"({summary['worker_vs_model']}x the model alone; facts, keywords, intents off)"
        )
        print(
            f"  worker, all      {full_rate:8.0f} messages/s  "
            f"({summary['worker_all_models_vs_model']}x; + facts, keywords, intents, needs)"
        )
        print(f"  nothing lost: {summary['lossless']}")
