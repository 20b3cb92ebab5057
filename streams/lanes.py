"""Two lanes through one worker: prompts are never queued behind bulk traffic.

Call assist only helps while the customer is still speaking, yet one agent reading every
topic put call turns behind whole batches of channel events: measured with one worker
draining a 50,000-event channel backlog, segment → prompt took p50 4.1 s / p99 7.7 s
(52 ms p99 idle). So the worker runs two Faust agents with their own pipelines, Redis
connections and producers:

- the **realtime** lane reads the topics whose events can prompt someone (``calls``,
  ``chat``);
- the **bulk** lane reads the rest (``channel-events``, ``commands``).

Each lane is its own Faust app with its own consumer (consumer group ``<group>`` for
bulk, ``<group>-realtime`` for realtime), so a call turn is never fetched behind bulk
records: with one consumer for both, turns still stalled 200–800 ms before their agent
got them.

``portrait worker`` (``--lane all``, the default) runs each lane in a process of its own
(``streams/worker.py``): the bulk lane's process lowers its CPU priority, so on a shared
host the operating system runs call turns first (behind a 50,000-event backlog, segment →
prompt p99 229 ms with both lanes in one process, 84–112 ms apart). With
``PORTRAIT_LANE_PROCESSES=false`` both lanes share one process, the event loop, the model
process and Redis, and the realtime lane gets each first: the bulk lane waits before every
chunk while a realtime batch is in flight (:class:`Urgency`), and sends its reading
requests to the model process one at a time (:class:`~streams.reading.GatedRunner`), so a
call turn waits behind at most one bulk chunk anywhere. When calls are quiet nothing
waits, so a backlog drains at full speed.

``portrait worker --lane realtime|bulk`` runs one lane (a Deployment each, scaled by
their own lag). The groups are the same either way, so lane workers and ``all`` workers
can serve one deployment together.
"""

from __future__ import annotations

import asyncio
import contextlib

LANES: dict[str, tuple[str, ...]] = {
    "realtime": ("calls", "chat"),
    "bulk": ("channel-events", "commands"),
}
"""Lane → the input topics (short names) it reads."""


def lanes_for(choice: str) -> list[str]:
    """The lanes a worker started with ``--lane choice`` runs, the bulk lane first (its
    app serves HTTP and runs the timers when both run)."""
    return ["bulk", "realtime"] if choice == "all" else [choice]


def consumer_group(base: str, lane: str) -> str:
    """A lane's consumer group: the base group for bulk, ``<base>-realtime`` for the
    realtime lane, whether a worker runs one lane or both."""
    return base if lane == "bulk" else f"{base}-{lane}"


class Urgency:
    """Realtime batches in flight; the bulk lane waits for none before each chunk."""

    def __init__(self, longest_wait_seconds: float = 0.1) -> None:
        self.longest_wait_seconds = longest_wait_seconds
        self._in_flight = 0
        self._quiet = asyncio.Event()
        self._quiet.set()

    def begin(self) -> None:
        """A realtime batch was taken."""
        self._in_flight += 1
        self._quiet.clear()

    def end(self) -> None:
        """A realtime batch was acknowledged (or failed)."""
        self._in_flight = max(self._in_flight - 1, 0)
        if self._in_flight == 0:
            self._quiet.set()

    async def wait_quiet(self) -> None:
        """Return once no realtime batch is in flight (at once when none is), or after
        ``longest_wait_seconds``: busy chat must not starve the bulk lane."""
        if self._quiet.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._quiet.wait(), self.longest_wait_seconds)
