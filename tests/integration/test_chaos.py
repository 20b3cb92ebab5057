"""The short fault suite (``portrait chaos --short``): a small seeded workload through two
real workers while one is killed, Redis loses the last second of its AOF under load and
a burst of poison records arrives, compared with
the oracle built from the generated events (``make chaos`` runs every fault). Under
``make test-cluster`` the Redis is a 3-master cluster and a node is killed instead of
losing its AOF's last second (``cli.chaos.OUTSIDE_CLUSTER_CONTRACT``)."""

from __future__ import annotations

import pytest

from cli.chaos import default_faults, run_chaos
from cli.workload import build_workload
from portrait.config import Settings

pytestmark = pytest.mark.integration


def test_the_workload_and_its_expectation_are_seeded() -> None:
    one, again = build_workload(3, 40, 6), build_workload(3, 40, 6)
    assert one.lines == again.lines and one.bad == again.bad
    assert any(p.erased for p in one.people) and one.account_events
    assert len(one.applied) < sum(len(p.events) for p in one.people)  # the erased' events


def test_two_workers_under_faults_lose_and_double_nothing(stack_settings: Settings) -> None:
    lines: list[str] = []
    faults = default_faults(stack_settings, short=True)  # a cluster's under make test-cluster
    report = run_chaos(
        stack_settings,
        seed=11,
        people=60,
        events_per_person=8,
        faults=faults,
        say=lines.append,
    )
    assert report.problems == [], "\n".join(lines)
    assert [f.name for f in report.faults] == list(faults)
    assert all(f.recovery_s < 60 for f in report.faults), "\n".join(lines)
