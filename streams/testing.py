"""Run the pipeline without a broker: input records from values, and a sink that keeps
what it is given (as Bytewax ships testing sources and sinks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from streams.records import InputRecord, OutputRecord


def input_records(
    topic: str, values: Sequence[bytes | dict[str, Any]], timestamp_ms: float | None = None
) -> list[InputRecord]:
    """Records of one partition at offsets 0, 1, …; dicts are encoded as JSON."""
    return [
        InputRecord(
            topic,
            0,
            offset,
            b"k",
            value if isinstance(value, bytes) else orjson.dumps(value),
            timestamp_ms,
        )
        for offset, value in enumerate(values)
    ]


class ListSink:
    """Keeps delivered records in order; ``failures``: how many deliveries fail first
    (as a broker that is down would)."""

    def __init__(self, failures: int = 0) -> None:
        self.records: list[OutputRecord] = []
        self.failures = failures

    async def deliver(self, records: Sequence[OutputRecord]) -> None:
        """The pipeline's ``Deliver``."""
        if self.failures:
            self.failures -= 1
            raise RuntimeError("broker unavailable")
        self.records.extend(records)

    def events(self) -> list[dict[str, Any]]:
        """The delivered values, decoded."""
        return [orjson.loads(record.value or b"null") for record in self.records]
