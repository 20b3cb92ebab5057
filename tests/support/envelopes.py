"""Input envelopes and the small stories several test modules tell."""

from __future__ import annotations

import os
from typing import Any

from portrait.config import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that gives a subprocess these settings."""
    return dict(os.environ) | settings.as_env()


def event(
    event_id: str,
    type_: str,
    occurred_at: str,
    source: str,
    customer: dict[str, Any],
    payload: dict[str, Any],
) -> dict[str, Any]:
    """An input envelope."""
    return {
        "event_id": event_id,
        "type": type_,
        "occurred_at": occurred_at,
        "source": source,
        "customer": customer,
        "payload": payload,
    }


def chan(eid: str, at: str, source: str, customer: dict[str, Any], **attrs: Any) -> dict[str, Any]:
    """A page view on a channel, carrying attributes."""
    payload = {"action": "page_view", "attributes": attrs}
    return event(eid, "channel.event", at, source, customer, payload)


def chat(eid: str, at: str, customer: dict[str, Any], text: str) -> dict[str, Any]:
    """An inbound chat message to ``emp-1`` in conversation ``conv-9``."""
    payload = {
        "conversation_id": "conv-9",
        "direction": "inbound",
        "employee_id": "emp-1",
        "text": text,
    }
    return event(eid, "chat.message", at, "wecom", customer, payload)


def media_chat(
    eid: str, when: str, text: str | None = None, images: list[str] | None = None
) -> dict[str, Any]:
    """An inbound chat message of the customer ``wx-facts`` with text and images."""
    payload: dict[str, Any] = {
        "conversation_id": "c-f",
        "direction": "inbound",
        "employee_id": "emp-1",
        "text": text,
        "images": images or [],
    }
    return event(eid, "chat.message", when, "wecom", {"im_id": "wx-facts"}, payload)


# --- agent assist: product history and a call ----------------------------------------

HAPPY_ZH = "太好了，非常满意，谢谢你们"
ANGRY_ZH = "你们太差劲了，我要投诉"
QUESTION_ZH = "我想问一下这个月的账单"
HAPPY_EN = "Great, that sounds perfect, thank you so much"
ANGRY_EN = "This is the worst service ever, I am absolutely disgusted and want to complain"


def at(seconds: int) -> str:
    """A moment ``seconds`` into the assist story's hour."""
    return f"2026-11-20T10:{seconds // 60:02d}:{seconds % 60:02d}+08:00"


def feedback(eid: str, product: str, outcome: str, phase: str = "proposal") -> dict[str, Any]:
    """An offer's outcome, for the phase × product statistics."""
    payload = {"call_id": "old", "product": product, "phase": phase, "outcome": outcome}
    return event(eid, "feedback.recorded", at(0), "hotline", {"phone": "13900000999"}, payload)


HISTORY = (
    [feedback(f"f-m{i}", "smart_meter", "accepted") for i in range(3)]
    + [feedback("f-m3", "smart_meter", "declined")]  # 4/6 = 0.67
    + [feedback("f-g0", "green_tariff", "accepted")]
    + [feedback(f"f-g{i}", "green_tariff", "declined") for i in (1, 2)]  # 2/5 = 0.4
    + [feedback(f"f-a{i}", "autopay", "declined") for i in range(5)]  # 1/7: below 0.3
)


def call(
    call_id: str, customer: dict[str, Any], turns: list[tuple[str, str, int]]
) -> list[dict[str, Any]]:
    """call.started, one segment per (speaker, text, offset s), call.ended."""
    started = {"call_id": call_id, "agent_id": "agent-li"}
    events = [event(f"{call_id}-s", "call.started", at(0), "hotline", customer, started)]
    for seq, (speaker, text, offset) in enumerate(turns, start=1):
        payload = {
            "call_id": call_id,
            "seq": seq,
            "speaker": speaker,
            "text": text,
            "offset_ms": offset * 1000,
        }
        events.append(
            event(f"{call_id}-{seq}", "call.segment", at(offset), "hotline", customer, payload)
        )
    end = {"call_id": call_id, "outcome": "resolved"}
    events.append(event(f"{call_id}-e", "call.ended", at(400), "hotline", customer, end))
    return events


TURNS = [
    ("customer", QUESTION_ZH, 10),  # opening, neutral → introduce_or_answer
    ("agent", HAPPY_ZH, 20),  # agent turns never prompt
    ("customer", HAPPY_ZH, 150),  # proposal, positive → smart_meter
    ("customer", HAPPY_ZH, 160),  # same advice: no new prompt
    ("customer", ANGRY_ZH, 170),  # negative → soothe_and_close
    ("customer", ANGRY_ZH, 180),  # unchanged
]


# --- the replay story: a merge, an edit, feedback history and an account-only call ------

REPLAY_STORY: list[dict[str, Any]] = [
    chan("r1", "2026-11-01T09:00:00+08:00", "app", {"phone": "13500000001"}, city="上海"),
    chan("r2", "2026-11-02T09:00:00+08:00", "web", {"im_id": "wx-r"}, company="Acme"),
    chat("r3", "2026-11-03T21:00:00+08:00", {"im_id": "wx-r"}, "你们太差劲了，我要投诉"),
    chan(  # links both: a merge
        "r4", "2026-11-04T10:00:00+08:00", "hotline", {"phone": "13500000001", "im_id": "wx-r"}
    ),
    event(
        "r5",
        "relation.changed",
        "2026-11-05T11:00:00+08:00",
        "wecom",
        {"im_id": "wx-r"},
        {"employee_id": "emp-3", "relation": "friend", "action": "added"},
    ),
    event(
        "r6",
        "profile.edited",
        "2026-11-06T11:00:00+08:00",
        "crm",
        {"phone": "13500000001"},
        {"editor_id": "emp-3", "set": {"name": "赵六"}, "tags_add": ["vip"]},
    ),
    *HISTORY,
    *call("call-r", {"account_no": "R-1"}, TURNS),
]
