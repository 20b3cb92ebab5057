"""A killed worker's partitions are processed again by the other, each event once. How
long that takes is a figure, not a bound: ``portrait bench --recovery`` measures it
(the longest gap in any partition's outputs, kill after kill)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from cli.stack import free_port
from portrait.config import Settings
from tests.support.envelopes import chan
from tests.support.worker import (
    StartWorker,
    http_get,
    outputs,
    produce,
    wait_for,
)

pytestmark = pytest.mark.integration


def _ready(settings: Settings) -> bool:
    try:
        return http_get(settings, "/readyz")[0] == 200
    except OSError:  # not listening yet
        return False


def _answered(settings: Settings, ids: set[str]) -> bool:
    done = {e["source_event_id"] for e in outputs(settings, "profile-changes")}
    return ids <= done


def _events(prefix: str, count: int) -> list[dict[str, object]]:
    # forty accounts: keys over every partition, so some land on the killed worker's
    return [
        chan(f"{prefix}{i}", "2026-11-01T09:00:00+08:00", "app", {"account_no": f"R{i % 40}"})
        for i in range(count)
    ]


def test_a_killed_workers_partitions_are_processed_again_nothing_lost(
    stack_settings: Settings, tmp_path: Path, worker: StartWorker
) -> None:
    second = stack_settings.model_copy(update={"http_port": free_port()})
    first_events, later = _events("r-a", 80), _events("r-b", 80)
    with worker(stack_settings, tmp_path / "w1.log") as doomed, worker(second, tmp_path / "w2.log"):
        for settings in (stack_settings, second):  # both have their partitions
            wait_for(lambda s=settings: _ready(s), what="both ready")
        produce(stack_settings, first_events)
        wait_for(lambda: _answered(stack_settings, {e["event_id"] for e in first_events}))
        os.killpg(doomed.pid, signal.SIGKILL)
        produce(stack_settings, later)
        wait_for(
            lambda: _answered(stack_settings, {e["event_id"] for e in later}),
            timeout=180,
            what="the events after the kill",
        )
    # at least once: a redelivered event's outputs go out again, with the same id and
    # the same content (subscribers keep the first); never two contents under one id
    emitted = outputs(stack_settings, "profile-changes")
    assert {e["source_event_id"] for e in emitted} >= {
        str(e["event_id"]) for e in first_events + later
    }
    contents: dict[str, dict[str, object]] = {}
    for output in emitted:
        kept = contents.setdefault(output["event_id"], output)
        assert {k: v for k, v in kept.items() if k != "emitted_at"} == {
            k: v for k, v in output.items() if k != "emitted_at"
        }
