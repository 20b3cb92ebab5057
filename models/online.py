"""Incremental learning of the customer-feature model from feedback (seed 001 "增量学习").

``feedback.recorded`` events with a satisfaction score become training examples for the
customer who gave them: the customer's feature vector after the event, and labels derived
from the feedback (a documented heuristic, since feedback measures satisfaction, not the
targets themselves):

- ``loyalty`` ← (satisfaction − 1) / 4, ``churn_risk`` ← 1 − (satisfaction − 1) / 4;
- ``value`` ← the current model's own value, raised by 0.1 when the feedback records an
  accepted offer (no other value signal arrives with feedback).

After ``learn_every`` examples the learner continues training a copy of the current
network (``partial_fit``, a few passes) and checks it on a fixed validation set: the
simulator's held-out customers plus the newest feedback. If the mean R² drops by more than
``tolerance`` the candidate is rejected and the current version stays; otherwise the
candidate is exported to ONNX as a new version, and the previous version is kept in the
registry, selectable by ``PORTRAIT_CUSTOMER_MODEL_VERSION``.
"""

from __future__ import annotations

import copy
import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.customer_model import ARTIFACTS, SEED, CustomerModel, r2_by_target
from models.customer_sim import simulate


@dataclass(frozen=True, slots=True)
class Candidate:
    """The outcome of one learning round."""

    accepted: bool
    version: str
    quality: float
    baseline: float
    onnx: bytes = b""


def labels_from_feedback(
    satisfaction: int, accepted_offer: bool, current_value: float
) -> np.ndarray:
    """The (value, loyalty, churn_risk) training labels of one feedback (module docstring)."""
    loyalty = (satisfaction - 1) / 4
    value = min(1.0, current_value + (0.1 if accepted_offer else 0.0))
    return np.asarray([value, loyalty, 1.0 - loyalty], dtype=np.float32)


def _mean_r2(predicted: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean(r2_by_target(predicted, truth)))


@dataclass
class CustomerLearner:
    """Collects feedback examples and produces checked new versions of the model."""

    base_version: str
    learn_every: int = 200
    tolerance: float = 0.02
    passes: int = 3
    examples: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    rounds: int = 0

    def __post_init__(self) -> None:
        with (ARTIFACTS / f"{self.base_version}.pkl").open("rb") as handle:
            # our own build output (models/customer_model.py), never downloaded
            self.pipeline: Any = pickle.load(handle)
        features, targets = simulate(2000, seed=SEED + 1000)
        self.validation = (features, targets)

    def observe(self, features: np.ndarray, labels: np.ndarray) -> None:
        """Add one example."""
        self.examples.append((np.asarray(features, dtype=np.float32), labels))

    @property
    def ready(self) -> bool:
        """True when enough examples wait for a learning round."""
        return len(self.examples) >= self.learn_every

    def learn(self, version: str) -> Candidate:
        """One round: train a copy on the waiting examples, check it, export it if good."""
        from skl2onnx import to_onnx

        batch, self.examples = self.examples, []
        x = np.stack([features for features, _ in batch])
        y = np.stack([labels for _, labels in batch])
        check_x = np.vstack([self.validation[0], x[-len(x) // 4 :]])
        check_y = np.vstack([self.validation[1], y[-len(y) // 4 :]])
        baseline = _mean_r2(np.clip(self.pipeline.predict(check_x), 0, 1), check_y)

        candidate = copy.deepcopy(self.pipeline)
        transformed = candidate[:-1].transform(x)
        for _ in range(self.passes):
            candidate[-1].partial_fit(transformed, y)
        quality = _mean_r2(np.clip(candidate.predict(check_x), 0, 1), check_y)
        self.rounds += 1
        if quality < baseline - self.tolerance:
            return Candidate(False, version, quality, baseline)
        self.pipeline = candidate
        onnx = to_onnx(candidate, x[:1], target_opset=17).SerializeToString()
        return Candidate(True, version, quality, baseline, onnx)


def model_from_candidate(candidate: Candidate, base: CustomerModel) -> CustomerModel:
    """A :class:`CustomerModel` running an accepted candidate."""
    return CustomerModel.from_bytes(candidate.onnx, candidate.version, base.card)
