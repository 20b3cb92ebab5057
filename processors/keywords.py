"""Keywords of what a customer writes (seed 002 "keywords"): jieba for Chinese, a word
tokenizer for English, stop words for both (``PORTRAIT_STOPWORDS_FILE``).

Function words are never keywords: a Chinese word whose part of speech in jieba's
dictionary is a pronoun, numeral, measure word, adverb, preposition, conjunction,
particle, interjection, onomatopoeia, direction or time word (每个, 多少, 已经, 这个) is
dropped by its tag, whatever the stop-word list holds; the list adds the content words
that are filler in customer service (了解, 请问, 麻烦) and the English function words.
The tags come from the dictionary jieba already loads (a look-up per word, not a
tagging pass: tagging would cost 4× the segmentation).

A customer's keywords are decayed weights, one per term (``d:kw:<term>`` in the
profile hash, added per message like every decayed preference; the state script keeps
the heaviest 300); the document shows the ``PORTRAIT_KEYWORDS_TOP_K`` heaviest, each
weight given as mentions counted at the customer's latest event (a mention one
half-life older counts half).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, cast

from portrait.config import DEFAULT_STOPWORDS_FILE
from processors.layout import KEYWORDS

KEYWORD = KEYWORDS.prefix[2:]  # prefix of keyword weights in the d: section
MAX_TERM_CHARS = 32

_HAN = re.compile(r"[\u4e00-\u9fff]")
_HAN_RUN = re.compile(r"[\u4e00-\u9fff]+")
_EN_WORD = re.compile(r"[a-z][a-z'-]*[a-z]")


@lru_cache(maxsize=4)
def load_stopwords(path: Path = DEFAULT_STOPWORDS_FILE) -> frozenset[str]:
    words: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            words.update(line.lower().split())
    return frozenset(words)


@lru_cache(maxsize=1)
def _jieba() -> Any:
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()
    return jieba


FUNCTION_TAGS = frozenset("rmqdpcueyoftxwz")
"""First letters of jieba's part-of-speech tags that mark function words (pronoun,
numeral, quantifier, adverb, preposition, conjunction, particle, interjection, modal,
onomatopoeia, direction, time, non-word, punctuation, status)."""


@lru_cache(maxsize=1)
def _tags() -> dict[str, str]:
    """jieba's dictionary: word → part-of-speech tag."""
    import jieba.posseg

    _jieba()
    return cast(dict[str, str], jieba.posseg.dt.word_tag_tab)


def is_function_word(word: str) -> bool:
    """True for a Chinese word the dictionary tags as a function word (module docstring);
    words it does not know are content."""
    tag = _tags().get(word, "")
    return tag[:1] in FUNCTION_TAGS if tag else False


def terms(text: str, stopwords: frozenset[str]) -> list[str]:
    """The distinct keyword terms of a text, in order of appearance: Chinese words of two
    or more characters from jieba, English words of three or more letters (apostrophes
    dropped), never a stop word."""
    found: dict[str, None] = {}
    lowered = text.lower()
    if _HAN.search(text):
        for run in _HAN_RUN.findall(text):
            for word in _jieba().lcut(run):
                if len(word) >= 2 and word not in stopwords and not is_function_word(word):
                    found.setdefault(word[:MAX_TERM_CHARS], None)
    for word in _EN_WORD.findall(lowered):
        word = word.replace("'", "")
        if len(word) >= 3 and word not in stopwords:
            found.setdefault(word[:MAX_TERM_CHARS], None)
    return list(found)


def keyword_fields(found: Sequence[str], weight: float) -> dict[str, float]:
    """Profile-hash operands: one decayed weight per term of a message."""
    return {f"{KEYWORDS.prefix}{term}": weight for term in found}


def keywords_document(
    weights: Mapping[str, str], latest_weight: float, top_k: int
) -> list[dict[str, Any]]:
    """The ``top_k`` heaviest keywords (ties: the smaller term), weights as mentions at the
    customer's latest event (``latest_weight`` = the decay weight of that moment)."""
    scale = 1.0 / latest_weight if latest_weight > 0 else 1.0
    # (minus the weight, term) sorts heaviest first, ties by the smaller term
    start = len(KEYWORD)
    ranked = sorted(
        (-float(value) * scale, name[start:])
        for name, value in weights.items()
        if name.startswith(KEYWORD)
    )
    return [{"term": term, "weight": round(-minus, 4)} for minus, term in ranked[:top_k]]
