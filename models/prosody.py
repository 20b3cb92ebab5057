"""Fusing text emotion with the voice of a call segment (seed 003: "语音韵律 + 语义").

The rule, documented because it decides prompts:

- *arousal* in 0…1 is the mean of three clipped ramps computed upstream from audio:
  pitch variability (``pitch_var`` 20 → 80 Hz), loudness (``energy_db`` −30 → −5 dB)
  and speaking rate (``speech_rate`` 3 → 6 syllables/s). Missing fields are left out;
  no prosody at all means the text decides alone.
- An agitated voice (arousal ≥ 0.6) moves a share of ``neutral`` — and of a weak
  ``positive`` (below 0.6, where polite words may hide anger) — to ``negative``; the share
  grows from 0.3 to 0.8 with arousal. Flat words said angrily are read as negative; a
  clearly happy customer who talks fast and loud stays positive. A calm voice
  (arousal ≤ 0.2) softens a weak negative (below 0.6) halfway towards neutral.
  Anything else keeps the text's scores.
"""

from __future__ import annotations

from dataclasses import replace

from portrait.events import Prosody
from processors.emotion import EmotionResult

AGITATED = 0.6
CALM = 0.2
_RAMPS = {"pitch_var": (20.0, 80.0), "energy_db": (-30.0, -5.0), "speech_rate": (3.0, 6.0)}


def arousal(prosody: Prosody | None) -> float | None:
    """0 (calm) … 1 (agitated), or None when no usable field is present."""
    if prosody is None:
        return None
    parts = []
    for name, (low, high) in _RAMPS.items():
        value = getattr(prosody, name)
        if value is not None:
            parts.append(min(max((value - low) / (high - low), 0.0), 1.0))
    return sum(parts) / len(parts) if parts else None


def fuse(text: EmotionResult, prosody: Prosody | None) -> EmotionResult:
    """The segment's emotion from its text emotion and its voice."""
    level = arousal(prosody)
    if level is None:
        return text
    scores = dict(text.scores)
    if level >= AGITATED:
        shift = (level - AGITATED) / (1 - AGITATED) * 0.5 + 0.3
        donors = ["neutral"] + (["positive"] if scores["positive"] < 0.6 else [])
        for donor in donors:
            scores["negative"] += shift * scores[donor]
            scores[donor] *= 1 - shift
    elif level <= CALM and scores["negative"] < 0.6:
        moved = scores["negative"] * 0.5
        scores["negative"] -= moved
        scores["neutral"] += moved
    else:
        return text
    scores = {label: round(value, 4) for label, value in scores.items()}
    label = max(scores, key=lambda name: scores[name])
    emotion = text.emotion if label == text.label else ("anger" if label == "negative" else None)
    return replace(
        text,
        label=label,
        scores=scores,
        emotion=emotion,
        emotion_score=text.emotion_score if emotion == text.emotion else None,
    )
