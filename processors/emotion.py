"""The customer's emotion in the profile: which text is read, and how results accumulate.

Owns ``profile.emotion``: ``last`` (the label of the latest analysed message by
``occurred_at``), ``average`` (valence P(positive) − P(negative), weighted by the same
recency decay as the preferences, so newer messages count more) and
``negative_streak`` (negative messages since the latest non-negative one). All three are
stored as commutative state (see ``apply_event.lua``), so replays in any order agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from portrait.events import CallSegment, ChannelEvent, ChatMessage, InputEvent
from processors.attributes import event_order
from processors.layout import CALM as LAYOUT_CALM
from processors.layout import NEGATIVE_STREAK, NEGATIVES
from processors.preferences import decay_weight


@dataclass(frozen=True, slots=True)
class EmotionResult:
    """Polarity label with the three class scores, and the finer emotion when consistent."""

    label: str
    scores: dict[str, float]
    emotion: str | None
    emotion_score: float | None

    @property
    def valence(self) -> float:
        """P(positive) − P(negative), in −1…1: the value the profile's average tracks."""
        return self.scores["positive"] - self.scores["negative"]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``portrait emotion`` output)."""
        return {
            "label": self.label,
            "scores": self.scores,
            "emotion": self.emotion,
            "emotion_score": self.emotion_score,
        }


LAST = "r:emotion_last"
CALM = LAYOUT_CALM
WEIGHT = "e:w"
WEIGHTED_VALENCE = "e:wv"
NEGATIVE = NEGATIVES.prefix
STREAK = NEGATIVE_STREAK[len(NEGATIVE) :]  # the streak's name in the n: section


def text_to_read(event: InputEvent) -> str | None:
    """The customer's own words in an event, if any: inbound chat, UGC, their call turns."""
    text: str | None = None
    if (
        isinstance(event, ChannelEvent)
        or (isinstance(event, ChatMessage) and event.payload.direction == "inbound")
        or (isinstance(event, CallSegment) and event.payload.speaker == "customer")
    ):
        text = event.payload.text
    return text if text and text.strip() else None


def emotion_fields(
    result: EmotionResult, occurred_ms: int, event_id: str, half_life_days: float
) -> dict[str, int | float | str]:
    """Profile-hash operands for one analysed message."""
    order = event_order(occurred_ms, event_id)
    weight = decay_weight(occurred_ms, half_life_days)
    fields: dict[str, int | float | str] = {
        LAST: f"{order}\t{result.label}",
        WEIGHT: weight,
        WEIGHTED_VALENCE: weight * result.valence,
    }
    if result.label == "negative":
        fields[NEGATIVE + order] = "1"
    else:
        fields[CALM] = order
    return fields


def emotion_document(
    registers: dict[str, str], sums: dict[str, str], negatives: dict[str, str]
) -> dict[str, Any]:
    """``profile.emotion`` from the ``r:``, ``e:`` and ``n:`` sections (prefix removed);
    the state keeps the negative messages newer than the latest calm one and answers
    their number as the streak."""
    last = registers.get(LAST[2:])
    weight = float(sums.get(WEIGHT[2:], 0.0))
    return {
        "last": last.split("\t", 1)[1] if last else None,
        "average": round(float(sums.get(WEIGHTED_VALENCE[2:], 0.0)) / weight, 4)
        if weight > 0
        else None,
        "negative_streak": negative_streak(negatives),
    }


def negative_streak(negatives: dict[str, str]) -> int:
    """Negative messages since the latest calm one, from the ``n:`` section."""
    return int(negatives.get(STREAK, 0))
