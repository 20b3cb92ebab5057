"""Lane workers: ``--lane realtime`` serves calls and chat only, ``--lane bulk`` the rest,
and together they serve everything (the groups are the same as in ``all``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from portrait.config import Settings
from tests.support.envelopes import chan, chat
from tests.support.worker import StartWorker, outputs, produce, wait_for

pytestmark = pytest.mark.integration


def _applied(settings: Settings) -> list[str]:
    return sorted(
        event["source_event_id"]
        for event in outputs(settings, "profile-changes")
        if event["type"] == "profile.changed"
    )


def test_each_lane_serves_its_own_topics(
    stack_settings: Settings, tmp_path: Path, worker: StartWorker
) -> None:
    events = [
        chat("l-chat", "2026-11-20T10:00:00+08:00", {"im_id": "wx-lane"}, "你好"),
        chan("l-chan", "2026-11-20T10:01:00+08:00", "app", {"phone": "13700000001"}),
    ]
    realtime = stack_settings.model_copy(update={"lane": "realtime"})
    with worker(realtime, tmp_path / "realtime.log"):
        produce(stack_settings, events)
        wait_for(lambda: "l-chat" in _applied(stack_settings), what="the chat message")
    assert _applied(stack_settings) == ["l-chat"]  # the channel event waits for bulk
    bulk = stack_settings.model_copy(update={"lane": "bulk"})
    with worker(bulk, tmp_path / "bulk.log"):
        wait_for(lambda: "l-chan" in _applied(stack_settings), what="the channel event")
    assert _applied(stack_settings) == ["l-chan", "l-chat"]  # each once
