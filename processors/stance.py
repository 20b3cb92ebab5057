"""Reading a message's stance as a whole: clauses, turns, cues (no model here).

The emotion heads see a message as one bag of features, so a complaint that ends well,
"no complaints", relief, a calm question about fraud, slang and emoji all read as their
loudest words. This module gives the model (``models/emotion.py``) two things:

- :meth:`StanceCues.features` — cue scores that become input columns of the heads
  (:data:`CUE_FEATURES`): positive and negative cues (slang, emoji, negated complaints
  such as "no complaints" / 没什么可挑剔, negated praise such as "not happy" / 不满意,
  relief such as 原来是… / "phew"), whether the message is an information request (a
  question form without an angry one), and whether it turns (但是 / "but" / 后来 /
  "now" …);
- :meth:`StanceCues.final_clause` — the part that carries the final stance: what follows
  the last turn marker, else the last sentence, when the message has more than one.
  The model reads it as well and weighs it in (a customer who is won back ends on it).

The cue lists are ``models/artifacts/emotion-cues.json``, written by the project and
documented in ``models/data/README.md``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import orjson

CUE_FEATURES = ("cue_positive", "cue_negative", "information_request", "turns")
_SENTENCE = re.compile(r"[。！？!?；;…\n]+|(?<=[a-z0-9])\.(?=\s|$)", re.IGNORECASE)
_HAN = re.compile(r"[\u4e00-\u9fff]")
_ASCII_WORD = re.compile(r"^[a-z0-9' /?.!-]+$")
_CAP = 3.0


def _pattern(cues: list[str]) -> re.Pattern[str] | None:
    """One alternation: English cues on word boundaries, others (Chinese, emoji) as
    substrings; longest first."""
    parts = []
    for cue in sorted({c.lower() for c in cues if c}, key=len, reverse=True):
        escaped = re.escape(cue)
        if _ASCII_WORD.match(cue):
            parts.append(rf"(?<![a-z]){escaped}(?![a-z])")
        else:
            parts.append(escaped)
    return re.compile("|".join(parts)) if parts else None


def _count(pattern: re.Pattern[str] | None, text: str) -> int:
    return len(pattern.findall(text)) if pattern is not None else 0


@dataclass(frozen=True)
class StanceCues:
    """The compiled cue lists."""

    positive: re.Pattern[str] | None
    negative: re.Pattern[str] | None
    question: re.Pattern[str] | None
    angry_question: re.Pattern[str] | None
    turn: re.Pattern[str] | None

    @classmethod
    def load(cls, path: Path) -> StanceCues:
        lists = orjson.loads(path.read_bytes())
        return cls(
            positive=_pattern(lists["positive"] + lists["negated_negative"] + lists["relief"]),
            negative=_pattern(lists["negative"] + lists["negated_positive"]),
            question=_pattern(lists["question_words"]),
            angry_question=_pattern(lists["angry_question"]),
            turn=_pattern(lists["turn"]),
        )

    def asks(self, text: str) -> bool:
        """A question form: a question mark at the end; a Chinese question word or a
        sentence-final particle (吗, 呢); an English sentence that opens with a question
        word ("how do I …", "who should I call")."""
        low = text.lower().rstrip()
        if low.endswith(("?", "？")):
            return True
        for sentence in _SENTENCE.split(low):
            sentence = sentence.strip(" ，,")
            if not sentence:
                continue
            if _HAN.search(sentence):
                if sentence.endswith(("吗", "呢", "么")) or any(
                    m.group(0)[0] >= "\u4e00" for m in self._questions(sentence)
                ):
                    return True
            elif any(m.start() == 0 for m in self._questions(sentence)):
                return True
        return False

    def _questions(self, sentence: str) -> list[re.Match[str]]:
        return list(self.question.finditer(sentence)) if self.question is not None else []

    def features(self, text: str, final: str | None) -> list[float]:
        """:data:`CUE_FEATURES` of a text, each in 0…1; ``final``: its
        :meth:`final_clause` (the caller reads it once for this and for the model)."""
        low = text.lower()
        angry = _count(self.angry_question, low)
        asks = self.asks(text)
        return [
            min(_count(self.positive, low), _CAP) / _CAP,
            min(_count(self.negative, low) + angry, _CAP) / _CAP,
            1.0 if asks and not angry else 0.0,
            1.0 if final is not None else 0.0,
        ]

    def final_clause(self, text: str) -> str | None:
        """What follows the last turn marker (when something real follows it), else the
        last sentence — only when the message has more than one part."""
        stripped = text.strip()
        low = stripped.lower()
        if self.turn is not None:
            found = list(self.turn.finditer(low))
            if found:
                tail = stripped[found[-1].start() :].strip(" ，,。.!！")
                head = stripped[: found[-1].start()].strip(" ，,。.!！")
                if _substantial(tail) and len(head) >= 2:
                    return tail
        sentences = [s.strip(" ，,") for s in _SENTENCE.split(stripped) if s.strip(" ，,")]
        if len(sentences) >= 2 and _substantial(sentences[-1]):
            return sentences[-1]
        return None


def _substantial(clause: str) -> bool:
    """Long enough to carry a stance of its own: four Chinese characters, or three
    English words (a lone "Impressive." after a complaint is more often irony)."""
    if _HAN.search(clause):
        return len(clause) >= 4
    return len(clause.split()) >= 3
