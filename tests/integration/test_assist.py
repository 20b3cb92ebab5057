"""Agent assist through the real worker: feedback history, then a Chinese and an English call."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from portrait.config import Settings
from tests.support.envelopes import (
    ANGRY_EN,
    ANGRY_ZH,
    HAPPY_EN,
    HAPPY_ZH,
    HISTORY,
    QUESTION_ZH,
    call,
    settings_env,
)
from tests.support.worker import PORTRAIT, StartWorker, outputs, produce, wait_for

pytestmark = pytest.mark.integration


def test_calls_get_phase_aware_prompts_in_their_language(
    stack_settings: Settings, tmp_path: Path, worker: StartWorker
) -> None:
    settings = stack_settings
    zh = call(
        "call-zh",
        {"phone": "13600000001"},
        [
            ("customer", QUESTION_ZH, 10),
            ("agent", HAPPY_ZH, 20),
            ("customer", HAPPY_ZH, 130),
            ("customer", ANGRY_ZH, 140),
        ],
    )
    en = call(
        "call-en",
        {"email": "pat@example.com"},
        [("customer", HAPPY_EN, 40), ("customer", ANGRY_EN, 320)],
    )
    with worker(settings, tmp_path / "worker.log"):
        produce(settings, HISTORY)

        def history_counted() -> bool:
            done = subprocess.run(
                [*PORTRAIT, "products", "--json"],
                env=settings_env(settings),
                capture_output=True,
                timeout=60,
                check=False,
            )
            rows = json.loads(done.stdout or b"[]")
            return sum(row["offers"] for row in rows) == len(HISTORY)

        wait_for(history_counted, what="feedback history")
        produce(settings, zh + en)
        wait_for(
            lambda: len([p for p in outputs(settings, "agent-prompts")]) >= 5,
            what="prompts",
        )
    prompts = outputs(settings, "agent-prompts")
    by_call = {
        c: [(p["kind"], p["product"], p["phase"]) for p in prompts if p["call_id"] == c]
        for c in ("call-zh", "call-en")
    }
    assert by_call == {
        "call-zh": [
            ("introduce_or_answer", None, "opening"),
            ("recommend_product", "smart_meter", "proposal"),
            ("soothe_and_close", None, "proposal"),
        ],
        "call-en": [
            ("introduce_or_answer", None, "discovery"),  # positive, nothing proven there
            ("soothe_and_close", None, "closing"),
        ],
    }
    texts = {p["source_event_id"]: p["text"] for p in prompts}
    assert texts["call-zh-3"].startswith("客户情绪积极") and "smart_meter" in texts["call-zh-3"]
    assert texts["call-en-2"].startswith("The customer is upset")
    assert {p["agent_id"] for p in prompts} == {"agent-li"}
    assert all(0 < p["latency_ms"] < 60_000 for p in prompts)
