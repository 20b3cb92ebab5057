"""The first thing a model process runs: end with its worker, whenever that dies.

Linux's parent-death signal reaches a process only for a parent that dies after the
signal was asked for, and a spawned child first imports whatever its initializer's
module imports. So this module imports nothing heavy: the child asks for the signal
first, then checks that the worker that started it is still its parent (it died before
the ask if not: the child leaves at once), and only then loads the models
(``streams.reader``). Found by a fault run: a worker killed while its model process
started left the child (≈ 470 MB) and its resource tracker running for good.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: the child imports the models after the death signal
    from streams.reader import Reader, Reading, ReadRequest

# the child's own reader, built by its initializer
_child_reader: Reader | None = None


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
    _start_reader()


def _start_reader() -> None:
    """Load and warm every model once (after the death signal: the imports are heavy)."""
    global _child_reader
    from portrait.config import load_settings
    from portrait.logs import configure_logging
    from streams.reader import Reader

    settings = load_settings()
    configure_logging(settings.log_level)
    _child_reader = Reader(settings)
    _child_reader.warm()


def read(request: ReadRequest) -> Reading:
    """Read one chunk with this process's :class:`~streams.reader.Reader` (the worker
    submits this function: it is pickled by name)."""
    assert _child_reader is not None, "the model process reads only after its initializer"
    return _child_reader.read(request)


def ready() -> bool:
    """Whether this process's models are loaded (the worker waits for it at start)."""
    return _child_reader is not None
