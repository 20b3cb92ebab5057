"""``profile.scores``: the customer-feature model's scores and the service priority tier.

Scores are derived from stored state on every change, never stored: the same state and
model version always give the same scores, and a new model version rescores customers
as they change. The pipeline scores all customers of a chunk in one model call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from models.customer_model import CustomerModel, default_customer_model, priority_tier
from models.online import CustomerLearner, labels_from_feedback, model_from_candidate
from models.registry import ModelRegistry, customer_model_in_use
from portrait import metrics
from portrait.config import Settings
from portrait.events import FeedbackRecorded, InputEvent
from processors.document import EMPTY_SCORES, Update, is_new
from processors.emotion import emotion_document
from processors.features import feature_vector
from processors.layout import Sections

log = logging.getLogger("portrait.scorer")

Scores = dict[str, Any]
"""``profile.scores``: value, loyalty, churn_risk, priority, model_version."""


def score_sections(model: CustomerModel | None, states: Sequence[Sections]) -> list[dict[str, Any]]:
    """``profile.scores`` for each customer state, in one model call."""
    if model is None or not states:
        return [dict(EMPTY_SCORES) for _ in states]
    vectors = np.stack([feature_vector(sections) for sections in states])
    documents = []
    for sections, scores in zip(states, model.score(vectors), strict=True):
        emotion = emotion_document(sections.registers, sections.sums, sections.negatives)
        documents.append(
            {
                "value": scores.value,
                "loyalty": scores.loyalty,
                "churn_risk": scores.churn_risk,
                "priority": priority_tier(scores, emotion["last"], emotion["negative_streak"]),
                "model_version": model.version,
            }
        )
    return documents


class Scorer:
    """``profile.scores`` for the pipeline: the customer-feature model in use, the scores
    it last gave each customer, online learning from feedback, and the model registry.

    ``model`` None scores nothing (every score empty). ``learner`` takes feedback with a
    satisfaction score; a learning round that passes its quality check becomes the model
    in use and is published to ``registry``. Every 30 s the scorer follows the registry's
    current version, or ``pinned`` when set.
    """

    def __init__(
        self,
        model: CustomerModel | None,
        learner: CustomerLearner | None = None,
        registry: ModelRegistry | None = None,
        pinned: str = "",
    ) -> None:
        self.model = model
        self.learner = learner
        self.registry = registry
        self.pinned = pinned
        self._last: OrderedDict[str, tuple[str | None, dict[str, Any]]] = OrderedDict()
        self._empty: dict[tuple[Any, ...], Scores] = {}
        self._histograms: dict[tuple[str, str], Any] = {}
        self._checked = 0.0
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="learner")

    @classmethod
    def for_settings(cls, settings: Settings, registry: ModelRegistry | None) -> Scorer:
        """The shipped model (when scores are on), learning every ``learn_every`` rated
        feedbacks (when above 0)."""
        if not settings.scores_enabled:
            return cls(None)
        model = default_customer_model()
        learner = None
        if settings.learn_every > 0:
            learner = CustomerLearner(
                model.version, learn_every=settings.learn_every, tolerance=settings.learn_tolerance
            )
        return cls(model, learner, registry, settings.customer_model_version)

    def close(self) -> None:
        """Stop the learning thread."""
        self._thread.shutdown(wait=False)

    def score(self, customers: Sequence[tuple[str, Update]]) -> list[tuple[Scores, Scores]]:
        """(old, new) ``profile.scores`` of each (customer id, update), in one model call.

        A customer's new scores are remembered with its version, so its next update
        reuses them as its old scores instead of scoring the state before it again.
        """
        model = self.model
        before: dict[int, Scores] = {}
        missing = []
        for index, (customer, update) in enumerate(customers):
            known = self._last.get(customer)
            if (
                known is not None
                and model is not None
                and known[0] == update.before.meta.get("version")
                and known[1]["model_version"] == model.version
            ):
                before[index] = known[1]
            elif is_new(update):  # every new customer's state before is the empty one
                before[index] = self._empty_scores(update.held("before"))
            else:
                missing.append(index)
        started = time.perf_counter()
        scored = score_sections(
            model,
            [customers[i][1].held("before") for i in missing]
            + [u.held("after") for _, u in customers],
        )
        if customers and model is not None:
            metrics.MODEL_SECONDS.labels("customer").observe(time.perf_counter() - started)
        before.update(zip(missing, scored, strict=False))
        after = scored[len(missing) :]
        for (customer, update), document in zip(customers, after, strict=True):
            if document["model_version"] is not None:
                for name in ("value", "loyalty", "churn_risk"):
                    self._histogram(document["model_version"], name).observe(document[name])
            self._last[customer] = (update.after.meta.get("version"), document)
            self._last.move_to_end(customer)
        while len(self._last) > 100_000:
            self._last.popitem(last=False)
        return [(before[i], after[i]) for i in range(len(customers))]

    def _empty_scores(self, sections: Sections) -> Scores:
        """The scores of an empty state (as a new customer's answer shows it), scored
        once per model."""
        model = self.model
        shape = tuple((k, tuple(part.items())) for k, part in sections.by_kind().items() if part)
        key = (model.version if model is not None else None, shape)
        scores = self._empty.get(key)
        if scores is None:
            if len(self._empty) >= 16:  # models learned since: their versions are gone
                self._empty.clear()
            scores = self._empty[key] = score_sections(model, [sections])[0]
        return scores

    def _histogram(self, version: str, name: str) -> Any:
        """The scores histogram of one model version and score (labels looked up once)."""
        child = self._histograms.get((version, name))
        if child is None:
            child = self._histograms[version, name] = metrics.SCORES.labels(version, name)
        return child

    def observe(self, event: InputEvent, update: Update, scores: Scores) -> None:
        """A feedback with a satisfaction score becomes a training example (its
        customer's state after it, labelled by the satisfaction and the outcome)."""
        if self.learner is None or not isinstance(event, FeedbackRecorded):
            return
        satisfaction = event.payload.satisfaction
        if satisfaction is None:
            return
        value = scores["value"]
        accepted = event.payload.outcome == "accepted"
        labels = labels_from_feedback(satisfaction, accepted, 0.5 if value is None else value)
        self.learner.observe(feature_vector(update.held("after")), labels)

    async def learn_if_ready(self) -> None:
        """A learning round when enough feedback waits; a good candidate becomes the
        model in use and is published."""
        if self.learner is None or not self.learner.ready or self.model is None:
            return
        number = await self.registry.next_number() if self.registry is not None else 0
        version = f"{self.learner.base_version}+{number or self.learner.rounds + 1}"
        loop = asyncio.get_running_loop()
        candidate = await loop.run_in_executor(self._thread, self.learner.learn, version)
        result = "accepted" if candidate.accepted else "rejected"
        metrics.MODEL_UPDATES.labels("customer", result).inc()
        log.info(
            "customer model learning round",
            extra={"reason": result, "events": self.learner.learn_every},
        )
        if not candidate.accepted:
            return
        self.model = model_from_candidate(candidate, self.model)
        if self.registry is not None:
            await self.registry.publish(candidate.version, candidate.onnx, candidate.quality)

    async def follow_registry(self) -> None:
        """Score with the pinned version, or the registry's current one (checked every
        30 s)."""
        if self.registry is None or self.model is None:
            return
        now = time.monotonic()
        if now - self._checked < 30.0:
            return
        self._checked = now
        wanted = self.pinned or await self.registry.current()
        if wanted and wanted != self.model.version:
            self.model = await customer_model_in_use(self.registry, wanted)
