"""Intents of inbound texts by embedding similarity (seed 001/002 topic matching).

Each intent of ``PORTRAIT_INTENTS_FILE`` has example phrases in Chinese and English;
a text goes to the intent of its most similar example (cosine of the sentence encoder's
normalised embeddings) when that similarity is at least ``min_similarity``, else to no
intent. Counts per intent live in the profile hash (``c:in:<intent>``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import orjson

from portrait.config import DEFAULT_INTENTS_FILE

INTENT = "in:"  # prefix of intent counts in the profile hash's c: section


class SentenceEncoder(Protocol):
    """Texts in, L2-normalised float32 vectors out (one row per text)."""

    name: str
    dimension: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed a batch of texts."""
        ...


@dataclass(frozen=True, slots=True)
class IntentTable:
    """Intent names and their example phrases."""

    examples: dict[str, list[str]]

    @classmethod
    def load(cls, path: Path = DEFAULT_INTENTS_FILE) -> IntentTable:
        data = orjson.loads(path.read_bytes())
        return cls({k: list(v) for k, v in data.items() if not k.startswith("_")})


class IntentMatcher:
    """Embeddings in, intent (or None) out; the examples are encoded once."""

    def __init__(self, table: IntentTable, encoder: SentenceEncoder, min_similarity: float):
        self.min_similarity = min_similarity
        self.names: list[str] = []
        phrases: list[str] = []
        for name, examples in table.examples.items():
            self.names.extend([name] * len(examples))
            phrases.extend(examples)
        self.examples = encoder.encode(phrases) if phrases else np.zeros((0, encoder.dimension))

    def match(self, embeddings: np.ndarray) -> list[str | None]:
        """The intent of each embedded text."""
        if len(embeddings) == 0 or len(self.examples) == 0:
            return [None] * len(embeddings)
        similarity = embeddings @ self.examples.T
        best = similarity.argmax(axis=1)
        return [
            self.names[int(column)] if similarity[row, column] >= self.min_similarity else None
            for row, column in enumerate(best)
        ]


def intent_fields(intent: str | None) -> dict[str, int]:
    """Profile-hash operands: one count for the message's intent."""
    return {f"c:{INTENT}{intent}": 1} if intent else {}


def intents_document(counts: Mapping[str, str]) -> dict[str, int]:
    """Intent → messages, most frequent first (ties: by name)."""
    found = [(int(v), name[len(INTENT) :]) for name, v in counts.items() if name.startswith(INTENT)]
    return {name: count for count, name in sorted(found, key=lambda p: (-p[0], p[1]))}
