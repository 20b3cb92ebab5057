"""Two lanes through one worker: prompts are never queued behind bulk traffic.

Call assist only helps while the customer is still speaking, yet one agent reading every
topic put call turns behind whole batches of channel events: measured with one worker
draining a 50,000-event channel backlog, segment → prompt took p50 4.1 s / p99 7.7 s
(52 ms p99 idle). So the worker runs two Faust agents with their own pipelines, Redis
connections and producers:

- the **realtime** lane reads the topics whose events can prompt someone (``calls``,
  ``chat``), in small batches;
- the **bulk** lane reads the rest (``channel-events``, ``commands``) in large ones.

They share the event loop, the model process and Redis, so the realtime lane gets each of
them first: the bulk lane waits before every chunk while a realtime batch is in flight
(:class:`Urgency`), and sends its reading requests to the model process one at a time
(:class:`~streams.reading.GatedRunner`), so a call turn waits behind at most one bulk
chunk anywhere. When calls are quiet nothing waits, so a backlog drains at full speed.

``portrait worker --lane realtime|bulk`` runs one lane (a Deployment each, scaled by
their own lag); such workers use the consumer group ``<group>-<lane>``. ``all`` (the
default) runs both lanes in one process and one group: run either lane workers or
``all`` workers for a deployment, not both.
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
    """The lanes a worker started with ``--lane choice`` runs."""
    return list(LANES) if choice == "all" else [choice]


def consumer_group(base: str, choice: str) -> str:
    """The consumer group of a worker running ``choice`` (``all``: the base group)."""
    return base if choice == "all" else f"{base}-{choice}"


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
