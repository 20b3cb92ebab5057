"""The first thing a model process runs: end with its worker, whenever that dies.

Linux's parent-death signal reaches a process only for a parent that dies after the
signal was asked for, and a spawned child first imports whatever its initializer's
module imports. So this module imports nothing heavy: the child asks for the signal
first, then checks that the worker that started it is still its parent (it died before
the ask if not: the child leaves at once), and only then loads the models
(``streams.reading``). Found by a fault run: a worker killed while its model process
started left the child (≈ 470 MB) and its resource tracker running for good.
"""

from __future__ import annotations

import os
import signal


def die_with_parent() -> None:
    """Ask Linux to end this process when its parent ends (even by SIGKILL)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pool's pipes end it instead
        pass


def start(parent_pid: int, environment: dict[str, str]) -> None:
    """The model process's initializer: the death signal, the parent check, then the
    models (settings from the worker's ``PORTRAIT_*`` variables)."""
    die_with_parent()
    if os.getppid() != parent_pid:  # the worker died before the signal was asked for
        os._exit(0)
    # Ctrl-C reaches the whole process group; the worker decides when this process ends
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.update(environment)
    from streams.reading import start_reader

    start_reader()
