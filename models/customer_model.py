"""The customer-feature model (seed 001 "客户特征模型"): features → value, loyalty, churn risk.

Built by ``python -m models.customer_model`` (``make models``) from the synthetic
customer simulator (``models/customer_sim.py`` — read its assumptions): a scikit-learn
pipeline of median filling of missing values, standardisation, and a small multi-output
neural network, exported whole to ONNX, so the fitted transforms ship inside the model.
Scores are clipped to 0…1. The priority tier is a documented rule on top
(:func:`priority_tier`).
"""

from __future__ import annotations

import json
import pickle
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from models.customer_sim import TARGETS, simulate
from models.runtime import cpu_session
from processors.features import FEATURES

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CARD = "customer.json"
VERSION = "customer-2026.11.1"
SEED = 11


@dataclass(frozen=True, slots=True)
class CustomerScores:
    """The model's scores for one customer, each in 0…1."""

    value: float
    loyalty: float
    churn_risk: float


def r2_by_target(predicted: np.ndarray, truth: np.ndarray) -> list[float]:
    """Coefficient of determination of each target column (0 where a column is constant)."""
    scores = []
    for index in range(truth.shape[1]):
        variance = float(np.var(truth[:, index]))
        error = predicted[:, index] - truth[:, index]
        scores.append(1.0 - float(np.mean(error**2)) / variance if variance > 0 else 0.0)
    return scores


def priority_tier(scores: CustomerScores, emotion_last: str | None, negative_streak: int) -> str:
    """Service priority for routing (seed 001 "服务优先级调整").

    ``urgent``: a valuable customer (value ≥ 0.6) likely to leave (churn ≥ 0.6), or anyone
    on a negative streak of 3 or more; ``high``: value ≥ 0.7, churn ≥ 0.6, or a valuable
    customer (≥ 0.5) whose last message was negative; ``low``: value < 0.2 and churn < 0.3
    and not negative now; otherwise ``normal``.
    """
    upset = emotion_last == "negative"
    if (scores.value >= 0.6 and scores.churn_risk >= 0.6) or negative_streak >= 3:
        return "urgent"
    if scores.value >= 0.7 or scores.churn_risk >= 0.6 or (upset and scores.value >= 0.5):
        return "high"
    if scores.value < 0.2 and scores.churn_risk < 0.3 and not upset:
        return "low"
    return "normal"


class CustomerModel:
    """Batch feature vectors → :class:`CustomerScores`, with onnxruntime."""

    def __init__(self, artifacts: Path = ARTIFACTS) -> None:
        card: dict[str, Any] = json.loads((artifacts / CARD).read_text(encoding="utf-8"))
        self._open((artifacts / card["file"]).read_bytes(), card["version"], card)

    @classmethod
    def from_bytes(cls, onnx: bytes, version: str, card: dict[str, Any]) -> CustomerModel:
        """A model version kept outside the package (learned online, from the registry)."""
        model = cls.__new__(cls)
        model._open(onnx, version, card)
        return model

    def _open(self, onnx: bytes, version: str, card: dict[str, Any]) -> None:
        if tuple(card["features"]) != FEATURES:
            raise ValueError("the model was trained on another feature vector")
        self.card = card
        self.version = version
        self.onnx = onnx
        self._session = cpu_session(onnx)
        self._input = self._session.get_inputs()[0].name

    def score(self, vectors: np.ndarray) -> list[CustomerScores]:
        """One result per row of ``vectors`` (columns as ``FEATURES``; NaN = missing)."""
        if len(vectors) == 0:
            return []
        [raw] = self._session.run(None, {self._input: np.asarray(vectors, dtype=np.float32)})
        # skl2onnx declares a multi-output regressor's output as (n, 1) but fills it
        # row-major with all targets: shape it back to (n, targets).
        shaped = np.asarray(raw, dtype=np.float32).reshape(len(vectors), len(TARGETS))
        clipped = np.clip(shaped, 0.0, 1.0)
        return [CustomerScores(*(round(float(v), 4) for v in row)) for row in clipped]


@lru_cache(maxsize=1)
def default_customer_model() -> CustomerModel:
    """The shipped model, loaded once per process."""
    return CustomerModel()


def build(count: int = 20_000, held_out: int = 5_000) -> dict[str, Any]:
    """Train on simulated customers, export to ONNX, write and return the card."""
    from skl2onnx import to_onnx
    from sklearn.impute import SimpleImputer
    from sklearn.neural_network import MLPRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    features, targets = simulate(count + held_out, seed=SEED)
    train_x, test_x = features[:count], features[count:]
    train_y, test_y = targets[:count], targets[count:]
    pipeline = Pipeline(
        [
            ("fill", SimpleImputer(strategy="median")),
            ("standardise", StandardScaler()),
            ("net", MLPRegressor(hidden_layer_sizes=(32, 16), max_iter=400, random_state=SEED)),
        ]
    )
    pipeline.fit(train_x, train_y)
    predicted = np.clip(pipeline.predict(test_x), 0.0, 1.0)
    metrics = {}
    r2 = r2_by_target(predicted, test_y)
    for index, name in enumerate(TARGETS):
        error = predicted[:, index] - test_y[:, index]
        metrics[name] = {
            "mae": round(float(np.mean(np.abs(error))), 4),
            "r2": round(r2[index], 4),
        }
        print(f"{name:11} held-out MAE {metrics[name]['mae']:.4f}  R² {metrics[name]['r2']:.4f}")
    file_name = f"{VERSION}.onnx"
    onnx = to_onnx(pipeline, train_x[:1], target_opset=17)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / file_name).write_bytes(onnx.SerializeToString())
    # the fitted pipeline itself, which models/online.py keeps training from feedback
    with (ARTIFACTS / f"{VERSION}.pkl").open("wb") as handle:
        pickle.dump(pipeline, handle)
    card = {
        "version": VERSION,
        "file": file_name,
        "features": list(FEATURES),
        "targets": list(TARGETS),
        "model": "median fill → standardise → MLP (32, 16) regressor, outputs clipped to 0…1",
        "data": f"SYNTHETIC: models/customer_sim.py, {count} simulated customers for "
        f"training, {held_out} held out, seed {SEED}",
        "metrics_held_out": metrics,
        "limits": [
            "Trained only on simulated customers: the scores encode the simulator's "
            "assumptions, not observed behaviour.",
            "Relationship features are not in the vector yet.",
        ],
    }
    (ARTIFACTS / CARD).write_text(json.dumps(card, ensure_ascii=False, indent=2) + "\n")
    return card


if __name__ == "__main__":
    build()
    sys.exit(0)
