"""Real-time agent assist (seed 003, seed 001 "情感分析响应"): what to tell the agent.

Owns the decision docs/design.md "Agent prompt" describes. A call's phase comes from a
segment's ``offset_ms`` (``opening`` [0, 30 s), ``discovery`` [30 s, 120 s),
``proposal`` [120 s, 300 s), ``closing`` from 300 s; boundaries configurable). For a
customer turn:

- positive → ``recommend_product``: the product with the highest smoothed success rate
  (accepted + 1) / (offers + 2) for that phase, among products with at least
  ``min_offers`` offers and a rate of at least ``min_rate``, skipping products the
  customer holds or declined in the last ``decline_days``; if none qualifies,
  ``introduce_or_answer``;
- neutral → ``introduce_or_answer``; negative → ``soothe_and_close``.

The ranking is made here (:func:`rank_products`) from the phase × product statistics;
the state script takes the first ranked product the customer does not hold or recently
decline, and answers a prompt only when the call's advice changed (compare and set in the
call session, in the same atomic step as the event's other updates).

In chats, an inbound negative message prompts the employee with ``soothe_and_close``, or
``escalate`` on a negative streak of ``escalate_streak`` or from a customer whose value
is at least ``escalate_value`` (:func:`chat_response`). Prompt text comes from a
templates file (``PORTRAIT_PROMPTS_FILE``), in the customer's language.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portrait.config import DEFAULT_PROMPTS_FILE, Settings
from portrait.events import CallEnded, CallSegment, CallStarted, InputEvent
from processors.attributes import event_order

PHASES = ("opening", "discovery", "proposal", "closing")
STATS_FIELD_SEPARATOR = "\t"
PRODUCT = "r:prod:"

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_PRODUCT_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,64}")


@dataclass(frozen=True, slots=True)
class AssistSettings:
    """Phase boundaries (ms from the call's start), the product-choice thresholds, how
    long call sessions live, and when a chat escalates."""

    boundaries_ms: tuple[int, int, int] = (30_000, 120_000, 300_000)
    min_offers: int = 3
    min_rate: float = 0.3
    decline_days: float = 30.0
    session_ttl_seconds: int = 4 * 3600
    ended_ttl_seconds: int = 600
    escalate_streak: int = 3
    escalate_value: float = 0.7


def assist_settings(settings: Settings) -> AssistSettings:
    """Call phases, product-choice thresholds, session lifetimes, chat escalation."""
    return AssistSettings(
        boundaries_ms=settings.assist_phase_boundaries_ms,
        min_offers=settings.assist_min_offers,
        min_rate=settings.assist_min_rate,
        decline_days=settings.assist_decline_days,
        session_ttl_seconds=settings.call_session_ttl_seconds,
        ended_ttl_seconds=settings.call_ended_ttl_seconds,
        escalate_streak=settings.escalate_negative_streak,
        escalate_value=settings.escalate_value,
    )


@dataclass(frozen=True, slots=True)
class ProductStats:
    """Offers and acceptances of one product in one phase."""

    offers: int = 0
    accepted: int = 0

    @property
    def rate(self) -> float:
        """Smoothed success rate (accepted + 1) / (offers + 2)."""
        return (self.accepted + 1) / (self.offers + 2)


@dataclass(frozen=True, slots=True)
class CallAdvice:
    """A changed advice for a call, as the state script answers it."""

    kind: str
    product: str | None
    rate: float | None
    agent_id: str | None
    phase: str | None

    @classmethod
    def parse(cls, parts: list[str]) -> CallAdvice:
        """From the script's ``kind US product US rate US agent US phase``."""
        kind, product, rate, agent, phase = parts
        return cls(kind, product or None, float(rate) if rate else None, agent or None, phase)


def phase_for_offset(offset_ms: int, settings: AssistSettings = AssistSettings()) -> str:
    """The call phase a segment ``offset_ms`` after the call's start belongs to."""
    for phase, boundary in zip(PHASES, settings.boundaries_ms, strict=False):
        if offset_ms < boundary:
            return phase
    return PHASES[-1]


def stats_field(kind: str, phase: str, product: str) -> str:
    """Name of one counter in the statistics hash (``offers`` or ``accepted``)."""
    return STATS_FIELD_SEPARATOR.join((kind, phase, product))


def feedback_counts(phase: str | None, product: str | None, outcome: str | None) -> dict[str, int]:
    """Counter increments for one feedback: an offer, and an acceptance if accepted."""
    if not phase or not product or outcome not in ("accepted", "declined"):
        return {}
    counts = {stats_field("offers", phase, product): 1}
    if outcome == "accepted":
        counts[stats_field("accepted", phase, product)] = 1
    return counts


def parse_stats(raw: Mapping[str, str | int]) -> dict[str, dict[str, ProductStats]]:
    """phase → product → stats, from the statistics hash."""
    counts: dict[tuple[str, str], dict[str, int]] = {}
    for name, value in raw.items():
        parts = name.split(STATS_FIELD_SEPARATOR)
        if len(parts) != 3:
            continue
        kind, phase, product = parts
        counts.setdefault((phase, product), {})[kind] = int(value)
    out: dict[str, dict[str, ProductStats]] = {}
    for (phase, product), c in counts.items():
        out.setdefault(phase, {})[product] = ProductStats(c.get("offers", 0), c.get("accepted", 0))
    return out


def rank_products(
    phase: str,
    stats: Mapping[str, Mapping[str, ProductStats]],
    settings: AssistSettings = AssistSettings(),
) -> list[tuple[str, float]]:
    """Products proven in ``phase`` (enough offers, rate high enough), best first (ties:
    by name), with their smoothed rates."""
    ranked = [
        (product, s.rate)
        for product, s in stats.get(phase, {}).items()
        if s.offers >= settings.min_offers and s.rate >= settings.min_rate
    ]
    return sorted(ranked, key=lambda item: (-item[1], item[0]))


def advice_kind(emotion: str) -> str:
    """The kind of advice an emotion calls for, before products are considered."""
    if emotion == "positive":
        return "recommend_product"
    return "soothe_and_close" if emotion == "negative" else "introduce_or_answer"


def call_session_delta(
    event: InputEvent,
    emotion: str | None,
    stats: Mapping[str, Mapping[str, ProductStats]],
    settings: AssistSettings = AssistSettings(),
) -> dict[str, Any] | None:
    """What a call event changes in its call session (the state script's ``call``), or
    None for other events. A customer turn with an emotion carries the advice inputs."""
    ttl_ms = settings.session_ttl_seconds * 1000
    if isinstance(event, CallStarted):
        return {"id": event.payload.call_id, "agent": event.payload.agent_id, "ttl": ttl_ms}
    if isinstance(event, CallEnded):
        call: dict[str, Any] = {
            "id": event.payload.call_id,
            "ttl": settings.ended_ttl_seconds * 1000,
        }
        if event.payload.outcome:
            call["outcome"] = event.payload.outcome
        return call
    if not isinstance(event, CallSegment):
        return None
    payload = event.payload
    call = {"id": payload.call_id, "seq": payload.seq, "ttl": ttl_ms}
    if payload.offset_ms is not None:
        call["offset"] = payload.offset_ms
        call["phase"] = phase_for_offset(payload.offset_ms, settings)
    if payload.speaker == "customer" and emotion is not None:
        phase = call.get("phase", PHASES[0])
        call["phase"] = phase
        call["emotion"] = emotion
        call["kind"] = advice_kind(emotion)
        call["candidates"] = (
            [[p, rate] for p, rate in rank_products(phase, stats, settings)]
            if call["kind"] == "recommend_product"
            else []
        )
        call["decline_ms"] = int(settings.decline_days * 86_400_000)
    return call


def product_fields(
    items: list[Any], status: str, occurred_ms: int, event_id: str
) -> dict[str, int | float | str]:
    """``r:prod:<product>`` registers: the customer holds or declined these products."""
    order = event_order(occurred_ms, event_id)
    out: dict[str, int | float | str] = {}
    for item in items:
        name = item.get("product") or item.get("name") if isinstance(item, dict) else item
        if isinstance(name, str) and _PRODUCT_NAME.fullmatch(name) and "\t" not in name:
            out[PRODUCT + name] = f"{order}\t{status}"
    return out


def products_document(registers: Mapping[str, str]) -> list[dict[str, str]]:
    """``profile.products``: products the customer holds or declined, by name."""
    out = []
    for name, stored in sorted(registers.items()):
        if name.startswith(PRODUCT[2:]):
            status = stored.split("\t", 1)[1]
            out.append({"product": name[len(PRODUCT) - 2 :], "status": status})
    return out


def chat_response(
    emotion: str | None,
    negative_streak: int,
    value: float | None,
    settings: AssistSettings = AssistSettings(),
) -> tuple[str, list[str]] | None:
    """The prompt kind and reasons for an inbound chat message, or None for no prompt."""
    if emotion != "negative":
        return None
    reasons = ["customer message is negative"]
    if negative_streak >= settings.escalate_streak:
        reasons.append(f"{negative_streak} negative messages in a row")
    if value is not None and value >= settings.escalate_value:
        reasons.append(f"high-value customer (value {value:.2f})")
    return ("escalate" if len(reasons) > 1 else "soothe_and_close"), reasons


def language_of(text: str | None) -> str:
    """``zh`` when the text has Chinese characters, else ``en``."""
    return "zh" if text and _CJK.search(text) else "en"


@dataclass(frozen=True, slots=True)
class PromptTemplates:
    """Prompt wording per channel (``call``/``chat``), kind and language, and a selling
    point per product (``PORTRAIT_PROMPTS_FILE``)."""

    templates: Mapping[str, Mapping[str, Mapping[str, str]]]
    products: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = DEFAULT_PROMPTS_FILE) -> PromptTemplates:
        """Read a templates file (JSON: ``templates`` and ``products``)."""
        table = json.loads(path.read_text(encoding="utf-8"))
        return cls(table["templates"], table.get("products", {}))

    def render(
        self, channel: str, kind: str, language: str, product: str | None, rate: float | None
    ) -> str:
        """The text the agent can say, naming the product and a reason to take it."""
        by_language = self.templates[channel][kind]
        template = by_language.get(language) or by_language["en"]
        pitch = self.products.get(product or "", {}).get(language)
        if pitch is None:
            pitch = self.templates["fallback_pitch"]["any"][language].format(
                rate=f"{(rate or 0):.0%}"
            )
        return template.format(product=product or "", pitch=pitch)


def prompt_reasons(advice: CallAdvice, emotion: str) -> list[str]:
    """Why the agent sees this call prompt (English, for the desktop's detail view)."""
    reasons = [f"customer is {emotion}"]
    if advice.kind == "recommend_product" and advice.product:
        reasons.append(
            f"{advice.product} succeeds {advice.rate or 0:.0%} of the time "
            f"in the {advice.phase} phase"
        )
    elif emotion == "positive":
        reasons.append(f"no proven product left for this customer in the {advice.phase} phase")
    return reasons


def prompt_id(source_event_id: str, agent_id: str) -> str:
    """Deterministic prompt id: a re-emitted prompt keeps its id."""
    return hashlib.sha256(f"agent.prompt|{source_event_id}|{agent_id}".encode()).hexdigest()[:32]
