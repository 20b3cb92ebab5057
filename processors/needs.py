"""Latent needs (seed 002 "潜在需求"): a rule table maps intents, keywords, indicators and
emotion to needs, each with a reason an employee can read (``PORTRAIT_NEEDS_FILE``).

A rule holds when every condition it names holds: ``intent`` with at least
``min_count`` messages (default 1), ``keywords_any`` (one of the terms among the
customer's keywords), ``indicator`` ``below`` / ``above`` a value, ``negative_streak``
at least a count. A need appears once, with the reason of its first rule that holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import orjson

from portrait.config import DEFAULT_NEEDS_FILE


def load_rules(path: Path = DEFAULT_NEEDS_FILE) -> list[dict[str, Any]]:
    rules = orjson.loads(path.read_bytes())["rules"]
    for rule in rules:
        if not rule.get("need") or not rule.get("reason"):
            raise ValueError("every needs rule has a need and a reason")
    return list(rules)


class _Lazy:
    """The customer's keywords, and indicators and negative streak built on first use."""

    def __init__(
        self,
        has_keyword: Callable[[str], bool],
        indicators: Callable[[], Mapping[str, Any]],
        negative_streak: Callable[[], int],
    ) -> None:
        self.has_keyword = has_keyword
        self._indicators, self._streak = indicators, negative_streak

    @cached_property
    def indicators(self) -> Mapping[str, Any]:
        return self._indicators()

    @cached_property
    def negative_streak(self) -> int:
        return self._streak()


def _holds(rule: Mapping[str, Any], intents: Mapping[str, int], customer: _Lazy) -> bool:
    if "intent" in rule and intents.get(rule["intent"], 0) < rule.get("min_count", 1):
        return False
    wanted = rule.get("keywords_any")
    if wanted and not any(customer.has_keyword(term.lower()) for term in wanted):
        return False
    if "indicator" in rule:
        value = customer.indicators.get(rule["indicator"])
        if value is None:
            return False
        if "below" in rule and not value < rule["below"]:
            return False
        if "above" in rule and not value > rule["above"]:
            return False
    return "negative_streak" not in rule or customer.negative_streak >= int(rule["negative_streak"])


def needs(
    rules: Sequence[Mapping[str, Any]],
    intents: Mapping[str, int],
    has_keyword: Callable[[str], bool],
    indicators: Callable[[], Mapping[str, Any]],
    negative_streak: Callable[[], int],
) -> list[dict[str, str]]:
    """The needs whose rules hold, in rule order, each once. ``has_keyword`` says whether
    a (lower-case) term is among the customer's keywords; ``indicators`` and
    ``negative_streak`` are called only when a rule gets as far as them."""
    customer = _Lazy(has_keyword, indicators, negative_streak)
    out: dict[str, str] = {}
    for rule in rules:
        if rule["need"] not in out and _holds(rule, intents, customer):
            out[rule["need"]] = rule["reason"]
    return [{"need": need, "reason": reason} for need, reason in out.items()]
