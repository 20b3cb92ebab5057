"""The realtime lane goes first: the bulk lane pauses for it and sends the model process
one request at a time; neither starves the other."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Any

from streams.kafka import INPUT_TOPICS
from streams.lanes import LANES, Urgency, consumer_group, lanes_for
from streams.reader import Reading, ReadRequest
from streams.reading import GatedRunner


class SlowRunner:
    """Reads one request at a time on a thread, FIFO, like the model process; records
    the order it read them in."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.order: list[str] = []
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def start(self) -> concurrent.futures.Future[Any]:
        return self._pool.submit(lambda: None)

    def submit(self, request: ReadRequest) -> concurrent.futures.Future[Reading]:
        def read() -> Reading:
            time.sleep(self.seconds)
            self.order.append(request.words[0][1])
            return Reading.empty(request.size)

        return self._pool.submit(read)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _request(name: str) -> ReadRequest:
    return ReadRequest(1, [(0, name)], [], [])


def test_a_realtime_request_waits_behind_at_most_one_bulk_request() -> None:
    shared = SlowRunner(0.02)
    bulk = GatedRunner(shared)
    bulk_reads = [bulk.submit(_request(f"bulk{i}")) for i in range(5)]
    time.sleep(0.005)  # bulk0 is being read
    urgent = shared.submit(_request("urgent"))
    urgent.result(timeout=5)
    for future in bulk_reads:
        future.result(timeout=5)
    shared.close()
    assert shared.order[:2] == ["bulk0", "urgent"]
    assert shared.order[2:] == ["bulk1", "bulk2", "bulk3", "bulk4"]


def test_a_dropped_bulk_request_is_never_read() -> None:
    shared = SlowRunner(0.02)
    bulk = GatedRunner(shared)
    first, dropped, last = (bulk.submit(_request(n)) for n in ("a", "dropped", "c"))
    assert dropped.cancel()
    first.result(timeout=5)
    last.result(timeout=5)
    shared.close()
    assert shared.order == ["a", "c"]


def test_gated_requests_complete_when_called_back_at_once() -> None:
    class Immediate:
        def submit(self, request: ReadRequest) -> concurrent.futures.Future[Reading]:
            done: concurrent.futures.Future[Reading] = concurrent.futures.Future()
            done.set_result(Reading.empty(request.size))
            return done

    gated = GatedRunner(Immediate())  # type: ignore[arg-type]
    results = [gated.submit(_request(str(i))) for i in range(50)]
    assert all(r.result(timeout=1).emotions == [None] for r in results)  # no deadlock


def test_bulk_waits_while_realtime_is_in_flight_but_not_forever() -> None:
    async def scenario() -> tuple[float, float, float]:
        urgency = Urgency(longest_wait_seconds=0.2)
        started = time.monotonic()
        await urgency.wait_quiet()
        quiet = time.monotonic() - started
        urgency.begin()
        asyncio.get_running_loop().call_later(0.05, urgency.end)
        started = time.monotonic()
        await urgency.wait_quiet()
        released = time.monotonic() - started
        urgency.begin()  # never ends: bulk goes on after the longest wait
        started = time.monotonic()
        await urgency.wait_quiet()
        return quiet, released, time.monotonic() - started

    quiet, released, starved = asyncio.run(scenario())
    assert quiet < 0.01
    assert 0.04 < released < 0.15
    assert 0.18 < starved < 0.5


def test_lanes_split_the_inputs_and_name_their_groups() -> None:
    assert sorted(t for topics in LANES.values() for t in topics) == sorted(INPUT_TOPICS)
    assert lanes_for("all") == ["bulk", "realtime"] and lanes_for("bulk") == ["bulk"]
    assert consumer_group("portrait", "bulk") == "portrait"
    assert consumer_group("portrait", "realtime") == "portrait-realtime"
