"""What the models read in a chunk: the request (texts and images, each with its record's
index), the answer, and the :class:`Reader` that holds every model and reads.

Where the reading runs — a child process or a thread — is ``streams/reading.py``; the
child's side is ``streams/model_child.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from models.emotion import default_model
from models.encoder import SentenceEncoder, load_encoder
from models.entities import ChineseEntities, EnglishEntities
from models.ocr import ImageError, TextReader, decode_image, image_bytes, image_policy
from portrait.config import Settings
from portrait.events import InputEvent
from processors.emotion import EmotionResult, text_to_read
from processors.envelope import Rejection
from processors.facts import (
    OCR_SOURCE,
    TEXT_SOURCE,
    FactCatalogue,
    FactExtractor,
    SourcedFact,
    best_sourced,
    fact_text,
    images_to_read,
)
from processors.intents import IntentMatcher, IntentTable
from processors.keywords import load_stopwords, terms

log = logging.getLogger("portrait.reading")


@dataclass(slots=True)
class ReadRequest:
    """One chunk's texts and images, each with the index of its record in the chunk."""

    size: int
    words: list[tuple[int, str]]  # the customer's own words: emotion, keywords, intent
    fact_texts: list[tuple[int, str]]
    images: list[tuple[int, int, str]]  # (record, image number in the message, reference)

    @classmethod
    def of(cls, decoded: Sequence[InputEvent | Rejection], ocr: bool) -> ReadRequest:
        """What there is to read in a chunk of decoded events (rejections have nothing)."""
        words, fact_texts, images = [], [], []
        for index, event in enumerate(decoded):
            if isinstance(event, Rejection):
                continue
            if (text := text_to_read(event)) is not None:
                words.append((index, text))
            if (text := fact_text(event)) is not None:
                fact_texts.append((index, text))
            for number, ref in enumerate(images_to_read(event) if ocr else ()):
                images.append((index, number, ref))
        return cls(len(decoded), words, fact_texts, images)


@dataclass(slots=True)
class Reading:
    """What the models read in a chunk, one entry per record: the emotion, keywords and
    intent of the customer's words, facts from text and images, and unreadable images
    (index, reason); ``seconds``: time per model, for the worker's metrics."""

    emotions: list[EmotionResult | None]
    facts: list[list[SourcedFact]]
    image_errors: list[list[tuple[int, str]]]
    keywords: list[list[str]]
    intents: list[str | None]
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def empty(cls, size: int) -> Reading:
        """Nothing read, for ``size`` records."""
        return cls(
            emotions=[None] * size,
            facts=[[] for _ in range(size)],
            image_errors=[[] for _ in range(size)],
            keywords=[[] for _ in range(size)],
            intents=[None] * size,
        )

    @classmethod
    def joined(cls, parts: Sequence[Reading]) -> Reading:
        """One reading of the records of ``parts``, in order."""
        joined = cls([], [], [], [], [])
        for part in parts:
            joined.emotions.extend(part.emotions)
            joined.facts.extend(part.facts)
            joined.image_errors.extend(part.image_errors)
            joined.keywords.extend(part.keywords)
            joined.intents.extend(part.intents)
            for model, seconds in part.seconds.items():
                joined.seconds[model] = joined.seconds.get(model, 0.0) + seconds
        return joined


class Reader:
    """Every model that reads text or images, loaded once; :meth:`read` a chunk at a time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.emotion_model = default_model() if settings.emotion_enabled else None
        self.facts = (
            FactExtractor(
                ChineseEntities(), EnglishEntities(), FactCatalogue.load(settings.facts_file)
            )
            if settings.facts_enabled
            else None
        )
        self.ocr = settings.reads_images
        self.stopwords = load_stopwords(settings.stopwords_file)
        self.encoder: SentenceEncoder | None = None
        if self.emotion_model is not None:
            self.encoder = self.emotion_model.encoder
        elif settings.intents_enabled:
            self.encoder = load_encoder(settings.embedding_model)
        self.intents = (
            IntentMatcher(
                IntentTable.load(settings.intents_file),
                self.encoder,
                settings.intent_min_similarity,
            )
            if settings.intents_enabled and self.encoder is not None
            else None
        )
        self.image_policy = image_policy(settings)
        self._text_reader: TextReader | None = None  # loaded with the first image

    def warm(self) -> None:
        """Load the models that otherwise load on first use (entity models, jieba, OCR)."""
        if self.facts is not None:
            self.facts.warm()
        terms("预热", self.stopwords)
        if self.ocr and self._text_reader is None:
            self._text_reader = TextReader()

    def read(self, request: ReadRequest) -> Reading:
        """Emotions, keywords and intents of the customer's words (encoded once for both
        models), facts from text and images."""
        words = request.words
        reading = Reading.empty(request.size)
        embeddings = None
        if words and self.encoder is not None:
            started = time.perf_counter()
            embeddings = self.encoder.encode([text for _, text in words])
            reading.seconds["encoder"] = time.perf_counter() - started
        if words and self.emotion_model is not None:
            started = time.perf_counter()
            results = self.emotion_model.predict([text for _, text in words], embeddings)
            reading.seconds["emotion"] = time.perf_counter() - started
            for (index, _), result in zip(words, results, strict=True):
                reading.emotions[index] = result
        for index, text in words if self.settings.keywords_enabled else ():
            reading.keywords[index] = terms(text, self.stopwords)
        if self.intents is not None and embeddings is not None:
            for (index, _), intent in zip(words, self.intents.match(embeddings), strict=True):
                reading.intents[index] = intent
        if self.facts is not None:
            self._read_facts(request, reading, self.facts)
        return reading

    def _read_facts(self, request: ReadRequest, reading: Reading, facts: FactExtractor) -> None:
        found: list[list[tuple[str, Any]]] = [[] for _ in range(request.size)]
        if request.fact_texts:
            started = time.perf_counter()
            extracted = facts.extract([text for _, text in request.fact_texts])
            reading.seconds["facts"] = time.perf_counter() - started
            for (index, _), those in zip(request.fact_texts, extracted, strict=True):
                found[index] = [(TEXT_SOURCE, fact) for fact in those]
        images: list[tuple[int, Any]] = []
        for index, number, ref in request.images if self.ocr else ():
            try:
                data = image_bytes(ref, self.image_policy)
                images.append((index, decode_image(data, self.image_policy.max_pixels)))
            except ImageError as exc:
                reading.image_errors[index].append((number, str(exc)))
        if images:
            if self._text_reader is None:
                self._text_reader = TextReader()
            started = time.perf_counter()
            read = self._text_reader.read([pixels for _, pixels in images])
            reading.seconds["ocr"] = time.perf_counter() - started
            for (index, _), those in zip(images, facts.extract(read, card=True), strict=True):
                found[index].extend((OCR_SOURCE, fact) for fact in those)
        reading.facts = [best_sourced(sourced) for sourced in found]
