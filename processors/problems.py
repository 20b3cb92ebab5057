"""Past problems and how they were resolved (seed 001 "问题解决辅助").

A customer's inbound text whose intent is a problem intent (``PORTRAIT_PROBLEM_INTENTS``:
complaints, outages, billing, repairs by default) is recorded as a problem register
``r:pb:<order>`` holding the intent, the time, the event id and the text (cut to
``TEXT_CHARS``). A ``call.ended`` with an outcome or a ``feedback.recorded`` with an
outcome or a satisfaction score is a resolution register ``r:rs:<order>``. A problem's
resolution is the earliest resolution at or after it: both kinds of register are
order-keyed, so the pairing is the same whatever order the events arrived in.

The state script keeps a customer's newest 20 problems and newest 20 resolutions (the
same ones in any arrival order; ``processors/layout.py``). ``profile.problems`` lists the
newest ``SHOWN`` problems; ``portrait problems --like`` ranks the kept ones by the
embedding similarity of their texts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from portrait.events import CallEnded, FeedbackRecorded, InputEvent
from processors.attributes import decode_register, encode_register, event_order, order_time
from processors.intents import SentenceEncoder
from processors.layout import PROBLEMS, RESOLUTIONS

# register prefixes in the r: section (each family kept in its own sorted set)
PROBLEM, RESOLUTION = PROBLEMS.prefix[2:], RESOLUTIONS.prefix[2:]
TEXT_CHARS = 280
SHOWN = 10


def problem_fields(
    text: str, intent: str | None, problem_intents: Sequence[str], occurred_ms: int, event_id: str
) -> dict[str, str]:
    """The problem register of a message, if its intent is a problem intent."""
    if intent is None or intent not in problem_intents:
        return {}
    order = event_order(occurred_ms, event_id)
    payload = {"intent": intent, "text": text.strip()[:TEXT_CHARS], "event_id": event_id}
    return {f"r:{PROBLEM}{order}": encode_register(order, payload)}


def resolution_fields(event: InputEvent, occurred_ms: int) -> dict[str, str]:
    """The resolution register of a call end or a feedback, if it says how things went."""
    payload: dict[str, Any] = {"event_id": event.event_id, "type": event.type}
    if isinstance(event, CallEnded) and event.payload.outcome:
        payload["outcome"] = event.payload.outcome
    elif isinstance(event, FeedbackRecorded) and (
        event.payload.outcome or event.payload.satisfaction
    ):
        payload["outcome"] = event.payload.outcome
        payload["satisfaction"] = event.payload.satisfaction
    else:
        return {}
    order = event_order(occurred_ms, event.event_id)
    return {f"r:{RESOLUTION}{order}": encode_register(order, payload)}


def all_problems(registers: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every recorded problem, newest first, each with its resolution or None."""
    resolutions = sorted(
        (name[len(RESOLUTION) :], stored)
        for name, stored in registers.items()
        if name.startswith(RESOLUTION)
    )
    out = []
    for name in sorted((n for n in registers if n.startswith(PROBLEM)), reverse=True):
        order = name[len(PROBLEM) :]
        problem = decode_register(registers[name])
        resolved = next(((o, s) for o, s in resolutions if o >= order), None)
        resolution = None
        if resolved is not None:
            found = decode_register(resolved[1])
            resolution = {
                "at": order_time(resolved[0]),
                "event_id": found["event_id"],
                "type": found["type"],
                "outcome": found.get("outcome"),
                "satisfaction": found.get("satisfaction"),
            }
        out.append(
            {
                "at": order_time(order),
                "intent": problem["intent"],
                "text": problem["text"],
                "event_id": problem["event_id"],
                "resolution": resolution,
            }
        )
    return out


def problems_document(registers: Mapping[str, str]) -> list[dict[str, Any]]:
    """The newest :data:`SHOWN` problems."""
    return all_problems(registers)[:SHOWN]


def most_similar(
    problems: Sequence[dict[str, Any]], like: str, encoder: SentenceEncoder, count: int = 3
) -> list[dict[str, Any]]:
    """The ``count`` problems whose texts are most similar to ``like``, with the cosine
    similarity (the encoder's vectors are normalised), most similar first."""
    if not problems:
        return []
    vectors = encoder.encode([like, *(p["text"] for p in problems)])
    similarity = vectors[1:] @ vectors[0]
    order = np.argsort(-similarity, kind="stable")[:count]
    return [{**problems[i], "similarity": round(float(similarity[i]), 4)} for i in order]
