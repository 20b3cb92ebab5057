"""``portrait worker --processes N``: N workers in one consumer group, one per core."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from portrait.config import Settings


def run_workers(settings: Settings, processes: int) -> int:
    """Run ``processes`` workers in one consumer group until stopped; returns the exit code.

    Each is a separate ``portrait worker`` process (its own GIL) on ``http_port + i``;
    SIGTERM and SIGINT are passed on to all of them.
    """
    children = []
    for index in range(processes):
        env = dict(os.environ, PORTRAIT_HTTP_PORT=str(settings.http_port + index))
        children.append(subprocess.Popen([sys.executable, "-m", "cli", "worker"], env=env))

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [child.wait() for child in children]
    return max(codes, default=0)
