"""`portrait stack`: starts what is missing, records it, stops exactly that."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from cli.stack import LocalStack, cluster_ports, free_port, port_answers
from portrait.config import Settings

pytestmark = pytest.mark.integration


def test_up_starts_and_forms_a_three_master_cluster(tmp_path: Path) -> None:
    ports = cluster_ports()
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        redis_url=f"redis://127.0.0.1:{ports[0]}/0",
        redis_cluster=True,
        stack_dir=tmp_path,
    )
    stack = LocalStack(settings)
    started = stack.up()
    try:
        assert {s.service for s in started} == {"kafka", "redis-0", "redis-1", "redis-2"}
        nodes = redis.Redis(port=ports[2]).cluster("nodes")
        masters = [n for n in nodes.values() if "master" in n["flags"]]
        assert len(masters) == 3 and all(n["slots"] for n in masters)
        assert redis.Redis(port=ports[1]).cluster("info")["cluster_state"] == "ok"
    finally:
        stopped = stack.down()
    assert {s.pid for s in stopped} == {s.pid for s in started}


def test_up_status_down_on_free_ports(tmp_path: Path) -> None:
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        stack_dir=tmp_path,
        redis_cluster=False,  # a standalone Redis here, also under make test-cluster
    )
    stack = LocalStack(settings)
    started = stack.up()
    try:
        assert {s.service for s in started} == {"kafka", "redis"}
        assert port_answers(settings.kafka_port) and port_answers(settings.redis_port)
        rows = {row["service"]: row for row in stack.status()}
        assert rows["kafka"]["started_by_portrait"] and rows["redis"]["answers"]
        assert stack.up() == started  # idempotent: nothing new is started
    finally:
        stopped = stack.down()
    assert {s.pid for s in stopped} == {s.pid for s in started}
    deadline = time.monotonic() + 10
    while port_answers(settings.kafka_port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not port_answers(settings.kafka_port)
    assert stack.recorded() == []


def test_a_service_already_answering_is_used_and_never_stopped(
    tmp_path: Path, redis_url: str
) -> None:
    settings = Settings(
        kafka_bootstrap=f"127.0.0.1:{free_port()}", redis_url=redis_url, stack_dir=tmp_path
    )
    stack = LocalStack(settings)
    started = stack.up()
    try:
        assert [s.service for s in started] == ["kafka"]
    finally:
        stack.down()
    assert port_answers(settings.redis_port)  # the session's Redis is still there


def test_cli_reports_status(tmp_path: Path) -> None:
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "cli", "stack", "status", "--json"],
        env={
            "PORTRAIT_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
            "PORTRAIT_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "PORTRAIT_STACK_DIR": str(tmp_path),
        },
        capture_output=True,
        check=False,
    )
    assert done.returncode == 1  # nothing answers on these ports
    assert b'"answers":false' in done.stdout.replace(b" ", b"")
