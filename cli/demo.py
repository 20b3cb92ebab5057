"""``portrait demo``: the whole system on one story, start to finish.

Starts the embedded stack (on free ports unless ``PORTRAIT_KAFKA_BOOTSTRAP`` /
``PORTRAIT_REDIS_URL`` are set), runs a worker, produces three customers' events from
every channel (Chinese and English, a merge, a late event, a duplicate, bad records),
prints the profiles and output events, and stops everything it started — on Ctrl-C too.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from importlib.resources import files

from cli.stack import LocalStack, on_free_ports, stop_process
from portrait.config import Settings

STORY_CUSTOMERS = (
    ("phone", "13800138000", "张伟 — app, WeCom, web, hotline; one phone written three ways"),
    ("email", "emily.clark@example.com", "Emily Clark — online service, marketing, import"),
    ("im_id", "wx_wangfang", "王芳 — his family, on the same account; one event sent twice"),
)


def _demo_settings(base: Settings) -> Settings:
    run = time.strftime("%Y%m%d%H%M%S")
    return on_free_ports(base).model_copy(
        update={
            "topic_prefix": f"demo-{run}.",
            "redis_key_prefix": f"demo-{run}:",
            "consumer_group": f"portrait-demo-{run}",
        }
    )


def _wait_ready(port: int, worker: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError("the worker exited during start-up")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError("the worker did not become ready")


def _section(title: str) -> None:
    print(f"\n=== {title} " + "=" * max(0, 70 - len(title)))


def cli(arguments: list[str]) -> None:
    """Run ``portrait <arguments>`` as a user would, its output on this terminal."""
    subprocess.run([sys.executable, "-m", "cli", *arguments], check=False)


def _play(settings: Settings, worker: subprocess.Popen[bytes]) -> None:
    from streams.kafka import ensure_topics, read_topic

    ensure_topics(settings)
    _section("worker")
    _wait_ready(settings.http_port, worker)
    print(f"ready; metrics at http://127.0.0.1:{settings.http_port}/metrics")

    _section("producing the story")
    data = files("cli").joinpath("demo_data")
    story = str(data.joinpath("demo_events.jsonl"))
    bad = str(data.joinpath("demo_bad.jsonl"))
    cli(["produce", story])
    cli(["produce", bad, "--topic", "chat"])

    _section("output events (portrait.profile-changes)")
    from cli.render import render_output

    topic = settings.topic("profile-changes")
    records: list[tuple[bytes | None, bytes]] = []
    deadline = time.monotonic() + 120  # the worker's first batch waits for its models
    while not records and time.monotonic() < deadline:
        records = read_topic(settings, topic, timeout=60, idle_timeout=4)
    records = read_topic(settings, topic, timeout=60, idle_timeout=4)  # the story, settled
    for _, value in records:
        print(render_output(value))

    _section("rejected input (portrait.dlq)")
    for _, record in read_topic(settings, settings.topic("dlq"), timeout=20, idle_timeout=2):
        print(render_output(record))

    for kind, identifier, caption in STORY_CUSTOMERS:
        _section(caption)
        cli(["profile", "get", f"--{kind.replace('_', '-')}", identifier])

    _section("the household's account: two people, their roles, a bill both profiles show")
    cli(["account", "get", "--account-no", "SH-00981"])

    _section("one profile as JSON (portrait profile get --phone 13800138000 --json)")
    cli(["profile", "get", "--phone", "13800138000", "--json"])


def run_demo(base: Settings, keep_stack: bool = False) -> int:
    """Run the demo; returns the exit code."""
    settings = _demo_settings(base)
    os.environ.update(settings.as_env())
    stack = LocalStack(settings)
    worker: subprocess.Popen[bytes] | None = None
    try:
        _section("embedded stack")
        stack.up()
        for row in stack.status():
            print(f"{row['service']:6} 127.0.0.1:{row['port']}  pid {row['pid'] or '(not ours)'}")
        worker = subprocess.Popen(
            [sys.executable, "-m", "cli", "worker"],
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        _play(settings, worker)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping what the demo started", file=sys.stderr)
        return 130
    finally:
        if worker is not None:
            stop_process(worker)
        if not keep_stack:
            for item in stack.down():
                print(f"stopped {item.service} (pid {item.pid})")
