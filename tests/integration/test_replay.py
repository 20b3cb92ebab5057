"""``portrait replay``: rebuild from the input topics with the batch engine, then --verify."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from portrait.config import Settings
from tests.support.envelopes import REPLAY_STORY as STORY
from tests.support.envelopes import settings_env
from tests.support.state import raw_client
from tests.support.worker import PORTRAIT, StartWorker, outputs, produce, wait_for

pytestmark = pytest.mark.integration


def run_replay(settings: Settings, namespace: str, *args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [*PORTRAIT, "replay", "--json", "--idle-timeout", "2", "--namespace", namespace, *args],
        env=settings_env(settings),
        capture_output=True,
        timeout=180,
        check=False,
    )
    return done.returncode, json.loads(done.stdout) if done.stdout else {}


def test_replay_rebuilds_the_live_profiles_exactly(
    stack_settings: Settings, tmp_path: Path, worker: StartWorker
) -> None:
    settings = stack_settings
    first, second, split = (f"{settings.redis_key_prefix}rebuilt-{n}:" for n in (1, 2, 3))
    produce(settings, STORY)
    with worker(settings, tmp_path / "worker.log"):
        wait_for(
            lambda: (
                {o["source_event_id"] for o in outputs(settings, "profile-changes")}
                >= {e["event_id"] for e in STORY}
            ),
            what="the live profiles",
        )
    code, result = run_replay(settings, first, "--verify")
    assert result["events"] == len(STORY)
    assert result["outcomes"] == {"ok": len(STORY)}
    assert result["differences"] == {} and code == 0
    assert result["customers"] == 3  # the merged pair, the feedback giver, the caller

    # two engines, each on its share of the partitions (the merged pair's events sit in
    # different topics): the same profiles
    code, result = run_replay(settings, split, "--verify", "--processes", "2")
    assert result["events"] == len(STORY) and result["outcomes"] == {"ok": len(STORY)}
    assert result["differences"] == {} and code == 0

    # a live profile that drifted from its inputs is reported, by path, without values
    client = raw_client(settings.redis_url)
    [key] = [
        k
        for k in client.scan_iter(f"{settings.redis_key_prefix}c:*:p")
        if client.hexists(k, "t:vip")
    ]
    client.hset(key, "c:events_total", 99)
    code, result = run_replay(settings, second, "--verify")
    [(cid, paths)] = result["differences"].items()
    assert key.decode().startswith(f"{settings.redis_key_prefix}c:{{{cid}}}")
    assert "stats.events_total" in paths and code == 1
    # what derives from the count (scores, activity) differs with it, and nothing else
    assert {p.split(".")[0] for p in paths} <= {"stats", "scores", "indicators"}

    # the target must be fresh
    code, _ = run_replay(settings, second)
    assert code == 2
