"""The emotion model at run time: sentence encoder + ONNX classifier heads.

Two logistic-regression heads trained by ``models/train_emotion.py`` on the multilingual
encoder's embeddings and exported to ONNX: polarity (``positive`` / ``neutral`` /
``negative``) and a finer emotion (``anger``, ``joy``, ``sadness``, ``fear``,
``surprise``, ``neutral``). Both run with onnxruntime, batched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from models.encoder import DEFAULT_ENCODER, SentenceEncoder, load_encoder
from models.runtime import cpu_session

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
POLARITY_ONNX = "emotion-polarity.onnx"
FINE_ONNX = "emotion-fine.onnx"
CARD = "emotion.json"

# A fine emotion is reported only when it agrees with the polarity it implies.
_FINE_POLARITY = {
    "anger": "negative",
    "sadness": "negative",
    "fear": "negative",
    "joy": "positive",
    "surprise": "positive",
    "neutral": "neutral",
}


@dataclass(frozen=True, slots=True)
class EmotionResult:
    """Polarity label with the three class scores, and the finer emotion when consistent."""

    label: str
    scores: dict[str, float]
    emotion: str | None
    emotion_score: float | None

    @property
    def valence(self) -> float:
        """P(positive) − P(negative), in −1…1: the value the profile's average tracks."""
        return self.scores["positive"] - self.scores["negative"]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``portrait emotion`` output)."""
        return {
            "label": self.label,
            "scores": self.scores,
            "emotion": self.emotion,
            "emotion_score": self.emotion_score,
        }


class _Head:
    """One ONNX classifier: float features in, class probabilities out."""

    def __init__(self, path: Path) -> None:
        self.session = cpu_session(str(path))
        self.input = self.session.get_inputs()[0].name

    def probabilities(self, features: np.ndarray, labels: Sequence[str]) -> np.ndarray:
        # skl2onnx is asked for a plain probability matrix (zipmap off), columns in the
        # order of the classifier's classes, which the model card records as `labels`.
        _, probabilities = self.session.run(None, {self.input: features})
        matrix = np.asarray(probabilities, dtype=np.float32)
        if matrix.shape[1] != len(labels):
            raise ValueError("model card labels do not match the ONNX outputs")
        return matrix


class EmotionModel:
    """Batch text → :class:`EmotionResult`, Chinese and English."""

    def __init__(self, artifacts: Path = ARTIFACTS, encoder: SentenceEncoder | None = None):
        self.card: dict[str, Any] = orjson.loads((artifacts / CARD).read_bytes())
        self.version: str = self.card["version"]
        self.encoder = encoder or load_encoder(self.card.get("encoder", DEFAULT_ENCODER))
        self.polarity_labels: list[str] = self.card["polarity_labels"]
        self.fine_labels: list[str] = self.card["fine_labels"]
        self._polarity = _Head(artifacts / POLARITY_ONNX)
        self._fine = _Head(artifacts / FINE_ONNX)

    def predict(self, texts: Sequence[str]) -> list[EmotionResult]:
        """One result per text, in order."""
        if not texts:
            return []
        features = self.encoder.encode(texts)
        polarity = self._polarity.probabilities(features, self.polarity_labels)
        fine = self._fine.probabilities(features, self.fine_labels)
        results = []
        for row, fine_row in zip(polarity, fine, strict=True):
            scores = {
                label: round(float(p), 4)
                for label, p in zip(self.polarity_labels, row, strict=True)
            }
            label = self.polarity_labels[int(np.argmax(row))]
            best = int(np.argmax(fine_row))
            emotion: str | None = self.fine_labels[best]
            emotion_score: float | None = round(float(fine_row[best]), 4)
            if _FINE_POLARITY.get(emotion or "") != label:
                emotion, emotion_score = None, None
            results.append(EmotionResult(label, scores, emotion, emotion_score))
        return results


@lru_cache(maxsize=1)
def default_model() -> EmotionModel:
    """The shipped model, loaded once per process."""
    return EmotionModel()
