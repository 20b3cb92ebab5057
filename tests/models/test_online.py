"""Incremental learning from feedback, and the model registry."""

from __future__ import annotations

import asyncio

import numpy as np

from models.customer_model import default_customer_model
from models.customer_sim import simulate
from models.online import CustomerLearner, labels_from_feedback, model_from_candidate
from models.registry import ModelRegistry
from portrait.config import Settings
from state.store import redis_client


def test_feedback_labels() -> None:
    assert np.allclose(labels_from_feedback(5, False, 0.4), [0.4, 1.0, 0.0])
    assert np.allclose(labels_from_feedback(1, True, 0.4), [0.5, 0.0, 1.0])
    assert np.allclose(labels_from_feedback(3, True, 0.95), [1.0, 0.5, 0.5])


def learner_with(labels_of: str) -> CustomerLearner:
    learner = CustomerLearner(default_customer_model().version, learn_every=200)
    features, targets = simulate(200, seed=777)
    if labels_of == "inverted":
        targets = 1.0 - targets
    for row, target in zip(features, targets, strict=True):
        learner.observe(row, target)
    return learner


def test_consistent_feedback_makes_a_new_version_that_runs() -> None:
    learner = learner_with("truth")
    assert learner.ready
    candidate = learner.learn("customer-test+1")
    assert candidate.accepted and candidate.onnx
    assert candidate.quality >= candidate.baseline - 0.02
    model = model_from_candidate(candidate, default_customer_model())
    assert model.version == "customer-test+1"
    x, _ = simulate(5, seed=1)
    assert len(model.score(x)) == 5 and not learner.ready


def test_feedback_that_ruins_quality_keeps_the_old_version() -> None:
    learner = learner_with("inverted")
    candidate = learner.learn("customer-test+2")
    assert not candidate.accepted and candidate.onnx == b""
    assert candidate.quality < candidate.baseline - 0.02


def test_registry_publishes_keeps_previous_and_rolls_back(redis_settings: Settings) -> None:
    async def scenario() -> list[object]:
        client = redis_client(redis_settings)
        registry = ModelRegistry(client, redis_settings.redis_key_prefix)
        try:
            first = await registry.current()
            number = await registry.next_number()
            await registry.publish("v+1", b"one", 0.7)
            await registry.publish("v+2", b"two", 0.71)
            now = await registry.current()
            stored = await registry.load("v+1")
            back = await registry.roll_back()
            return [first, number, now, stored, back, await registry.current()]
        finally:
            await client.aclose()

    assert asyncio.run(scenario()) == [None, 1, "v+2", b"one", "v+1", "v+1"]


def test_workers_and_lookups_use_the_pinned_or_current_version(redis_settings: Settings) -> None:
    from models.registry import customer_model_in_use

    learner = learner_with("truth")
    candidate = learner.learn("customer-2026.11.1+7")

    async def scenario() -> list[str]:
        client = redis_client(redis_settings)
        registry = ModelRegistry(client, redis_settings.redis_key_prefix)
        try:
            before = (await customer_model_in_use(registry)).version
            await registry.publish(candidate.version, candidate.onnx, candidate.quality)
            current = (await customer_model_in_use(registry)).version
            pinned = (await customer_model_in_use(registry, before)).version
            unknown = (await customer_model_in_use(registry, "nope+1")).version
            return [before, current, pinned, unknown]
        finally:
            await client.aclose()

    shipped = default_customer_model().version
    assert asyncio.run(scenario()) == [shipped, "customer-2026.11.1+7", shipped, shipped]
