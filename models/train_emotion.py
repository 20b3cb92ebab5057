"""Build and evaluate the emotion model: ``python -m models.train_emotion [--eval-only]``.

Data: ``models/data/emotion_cs.jsonl``, customer-service messages the project wrote
(see ``models/data/README.md``), split 80/20 stratified by language and label with a
fixed seed. The heads are trained on the 80 % only, so the figures on the 20 % and on
``../shared/samples/emotion_dev.jsonl`` (never trained on) are held-out figures.

``make models`` rebuilds the ONNX files and the model card; ``make eval`` re-reads the
shipped ONNX files and prints accuracy and macro-F1 per language and recall per class.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.emotion import ARTIFACTS, CARD, FINE_ONNX, POLARITY_ONNX, EmotionModel
from models.encoder import DEFAULT_ENCODER, load_encoder

DATA = Path(__file__).resolve().parent / "data" / "emotion_cs.jsonl"
# written after the model was built and never trained on: a second unseen evaluation set
UNSEEN = Path(__file__).resolve().parent / "data" / "emotion_cs_unseen.jsonl"
SHARED_DEV = Path(__file__).resolve().parents[2] / "shared" / "samples" / "emotion_dev.jsonl"
SEED = 7
HELD_OUT = 0.2
C = 4.0
VERSION = "emotion-2026.11.1"


def load_rows(path: Path) -> list[dict[str, str]]:
    """JSONL rows with at least ``text``, ``label`` and ``lang``."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def split(rows: Sequence[dict[str, str]]) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Stratified (language, label) split with a fixed seed: (train, held out)."""
    rng = np.random.default_rng(SEED)
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        groups[(row["lang"], row["label"])].append(row)
    train: list[dict[str, str]] = []
    held: list[dict[str, str]] = []
    for key in sorted(groups):
        members = groups[key]
        order = rng.permutation(len(members))
        cut = round(len(members) * HELD_OUT)
        held.extend(members[i] for i in order[:cut])
        train.extend(members[i] for i in order[cut:])
    return train, held


def report(name: str, rows: Sequence[dict[str, str]], predicted: Sequence[str]) -> dict[str, Any]:
    """Accuracy and macro-F1 per language, recall per class; printed and returned."""
    out: dict[str, Any] = {}
    for lang in sorted({row["lang"] for row in rows}):
        idx = [i for i, row in enumerate(rows) if row["lang"] == lang]
        truth = [rows[i]["label"] for i in idx]
        guess = [predicted[i] for i in idx]
        labels = sorted(set(truth))
        recall, f1 = {}, []
        for label in labels:
            tp = sum(t == g == label for t, g in zip(truth, guess, strict=True))
            support = truth.count(label)
            chosen = guess.count(label)
            recall[label] = round(tp / support, 3) if support else 0.0
            precision = tp / chosen if chosen else 0.0
            r = tp / support if support else 0.0
            f1.append(2 * precision * r / (precision + r) if precision + r else 0.0)
        accuracy = sum(t == g for t, g in zip(truth, guess, strict=True)) / len(truth)
        out[lang] = {
            "n": len(truth),
            "accuracy": round(accuracy, 3),
            "macro_f1": round(float(np.mean(f1)), 3),
            "recall": recall,
        }
        print(
            f"{name:18} {lang}  n={len(truth):3}  accuracy {accuracy:.3f}  "
            f"macro-F1 {np.mean(f1):.3f}  recall "
            + "  ".join(f"{label} {value:.2f}" for label, value in recall.items())
        )
    return out


def evaluate(model: EmotionModel, held: Sequence[dict[str, str]]) -> dict[str, Any]:
    """Figures of a model on the held-out split and on the shared dev sample."""
    figures = {"held_out": report("held-out split", held, _labels(model, held))}
    if UNSEEN.exists():
        unseen = load_rows(UNSEEN)
        figures["unseen"] = report("unseen set", unseen, _labels(model, unseen))
    if SHARED_DEV.exists():
        dev = load_rows(SHARED_DEV)
        figures["shared_dev"] = report("shared dev sample", dev, _labels(model, dev))
    return figures


def _labels(model: EmotionModel, rows: Sequence[dict[str, str]]) -> list[str]:
    return [result.label for result in model.predict([row["text"] for row in rows])]


def _export(features: np.ndarray, labels: Sequence[str], path: Path) -> list[str]:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression(C=C, max_iter=5000, random_state=SEED)
    classifier.fit(features, list(labels))
    onnx = to_onnx(
        classifier,
        features[:1],
        options={id(classifier): {"zipmap": False}},
        target_opset=17,
    )
    path.write_bytes(onnx.SerializeToString())
    return [str(label) for label in classifier.classes_]


def build(encoder_name: str = DEFAULT_ENCODER) -> dict[str, Any]:
    """Train both heads on the training split, export them, write and return the card.

    ``encoder_name`` is ``PORTRAIT_EMBEDDING_MODEL``; the card records it, and the model
    loads the same encoder at run time (a head only fits the space it was trained in).
    """
    rows = load_rows(DATA)
    train, held = split(rows)
    encoder = load_encoder(encoder_name)
    features = encoder.encode([row["text"] for row in train])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    polarity_labels = _export(features, [r["label"] for r in train], ARTIFACTS / POLARITY_ONNX)
    fine_labels = _export(features, [r["emotion"] for r in train], ARTIFACTS / FINE_ONNX)
    card: dict[str, Any] = {
        "version": VERSION,
        "encoder": encoder_name,
        "polarity_labels": polarity_labels,
        "fine_labels": fine_labels,
        "head": f"logistic regression, C={C}, on {encoder.dimension}-d encoder embeddings",
        "data": {
            "file": "models/data/emotion_cs.jsonl",
            "sha256": hashlib.sha256(DATA.read_bytes()).hexdigest(),
            "rows": len(rows),
            "train_rows": len(train),
            "held_out_rows": len(held),
            "split": f"stratified by (lang, label), {HELD_OUT:.0%} held out, seed {SEED}",
        },
    }
    (ARTIFACTS / CARD).write_text(json.dumps(card, ensure_ascii=False, indent=2) + "\n")
    model = EmotionModel(ARTIFACTS, encoder)
    card["metrics"] = evaluate(model, held)
    card["limits"] = [
        "Trained on a few hundred short customer-service messages the project wrote; long "
        "or domain-far text (reviews, news) is out of distribution.",
        "Sarcasm is learned only from the examples in the set; subtle irony is often "
        "read literally.",
        "Fine emotions are reported only when they agree with the polarity; surprise is "
        "learned as a positive emotion.",
        "Chinese and English only were trained and evaluated, although the encoder is "
        "multilingual.",
    ]
    (ARTIFACTS / CARD).write_text(json.dumps(card, ensure_ascii=False, indent=2) + "\n")
    return card


def main(argv: Sequence[str] | None = None) -> int:
    """Rebuild (default) or only evaluate (``--eval-only``) the shipped model."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eval-only", action="store_true")
    args = parser.parse_args(argv)
    if args.eval_only:
        _, held = split(load_rows(DATA))
        evaluate(EmotionModel(), held)
    else:
        from portrait.config import load_settings

        build(load_settings().embedding_model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
