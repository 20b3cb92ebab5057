"""Fixtures that run the batch pipeline on the session Redis without a broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from portrait.config import Settings
from state.stores import store_for
from streams.pipeline import BatchPipeline
from streams.records import BatchOutcome, InputRecord
from streams.testing import ListSink

RunBatch = Callable[[Settings, list[InputRecord], ListSink], BatchOutcome]


def _run_batch(settings: Settings, batch: list[InputRecord], sink: ListSink) -> BatchOutcome:
    async def go() -> BatchOutcome:
        store = store_for(settings)
        pipeline = BatchPipeline.for_settings(settings, store)
        try:
            return await pipeline.run(batch, sink.deliver)
        finally:
            pipeline.close()
            await store.close()

    return asyncio.run(go())


@pytest.fixture
def run_batch() -> RunBatch:
    """Run one batch through a pipeline built from the settings, into the sink."""
    return _run_batch
