"""The profile document (docs/design.md "Profile document") built from stored state.

Owns how stored fields read as a document: :func:`sections_of` groups a customer's
stored fields by kind, :class:`ProfileView` builds each top-level field from them (the
parts several fields share — intents, emotion, indicators — once), and
:data:`FIELD_BUILDERS` says which stored fields each top-level field reads, so an update
rebuilds only the fields whose inputs it wrote (:func:`changed_fields`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, TypedDict

import orjson

from portrait.config import Settings
from processors.accounts import AccountState, behaviour, holding, people_document, role_name
from processors.assist import PRODUCT, products_document
from processors.attributes import decode_register, iso_from_ms
from processors.emotion import emotion_document
from processors.identity import split_identifier_key
from processors.indicators import Population, indicators
from processors.intents import intents_document
from processors.keywords import KEYWORD, keywords_document
from processors.layout import (
    ACTIONS,
    AMOUNT,
    COUNT,
    FIRST_SEEN,
    KEYWORDS,
    LAST_SEEN,
    NEGATIVE_STREAK,
    NEGATIVES,
    PROBLEMS,
    REJECTED,
    RESOLUTIONS,
    ROLE,
    VERSION,
    Sections,
    family_of,
    sections_of,
)
from processors.needs import load_rules, needs
from processors.preferences import decay_weight
from processors.problems import problems_document
from processors.relationships import (
    ClosenessWeights,
    actions_towards_employees,
    relationships,
)
from processors.roles import roles


@dataclass(frozen=True, slots=True)
class DocumentSettings:
    """Closeness weights, the recency half-life (as the deltas use it), the role →
    permission table, and a snapshot of the spend population."""

    closeness: ClosenessWeights = field(default_factory=ClosenessWeights)
    half_life_days: float = 30.0
    permissions: Mapping[str, list[str]] = field(default_factory=dict)
    population: Population = field(default_factory=Population)
    """Customers per spend bucket (the store's ``pop:spend``), for ``indicators.wealth``."""
    keywords_top_k: int = 10
    needs_rules: Sequence[Mapping[str, Any]] = ()
    """The latent-needs rule table (``processors.needs``)."""
    region: str = "CN"
    """Where a phone number without a country code is from (identity rules)."""


DEFAULT_DOCUMENT = DocumentSettings()

EMPTY_SCORES: dict[str, Any] = {
    "value": None,
    "loyalty": None,
    "churn_risk": None,
    "priority": None,
    "model_version": None,
}
"""``profile.scores`` of a customer no model scored (``models/scorer.py`` gives the rest)."""


def document_settings(settings: Settings) -> DocumentSettings:
    """How stored state reads as a profile under these settings (closeness weights,
    recency half-life, role permissions, keywords shown, needs rules)."""
    closeness = ClosenessWeights(
        friend=settings.closeness_friend_weight,
        group=settings.closeness_group_weight,
        message=settings.closeness_message_weight,
        recency=settings.closeness_recency_weight,
    )
    table = orjson.loads(settings.roles_file.read_bytes())
    permissions = {role: list(allowed) for role, allowed in table.items() if role[0] != "_"}
    return DocumentSettings(
        closeness,
        settings.preference_half_life_days,
        permissions,
        keywords_top_k=settings.keywords_top_k,
        needs_rules=load_rules(settings.needs_file),
        region=settings.default_region,
    )


class StoredState(TypedDict):
    """One customer's state as the store gives it: fields (profile hash and family
    views, by the layout's prefixes) and identifiers."""

    fields: dict[str, str]
    ids: list[str]


class ProfileView:
    """One customer's stored state as document fields; each is built on first use.
    ``accounts``: the accounts the person holds (number → state), which their
    ``accounts`` field shows and their indicators count."""

    def __init__(
        self,
        sections: Sections,
        ids: list[str],
        settings: DocumentSettings,
        accounts: Mapping[str, AccountState] | None = None,
    ) -> None:
        self.sections = sections
        self.ids = ids
        self.settings = settings
        self.held = accounts or {}

    @cached_property
    def account_sections(self) -> dict[str, Sections]:
        return {number: sections_of(state.fields) for number, state in self.held.items()}

    def version(self) -> int:
        return int(self.sections.meta.get("version", 0))

    def identifiers(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"phone": [], "im_id": [], "email": [], "customer_id": []}
        for key in sorted(self.ids):
            kind, value = split_identifier_key(key)
            out.setdefault(kind, []).append(value)
        return out

    def attributes(self) -> dict[str, Any]:
        out = {}
        for name, stored in sorted(self.sections.attributes.items()):
            payload = decode_register(stored)
            if payload.get("value") is not None:
                out[name] = payload
        return out

    def tags(self) -> list[str]:
        return sorted(name for name, stored in self.sections.tags.items() if stored.endswith("\t1"))

    def stats(self) -> dict[str, Any]:
        meta, counts = self.sections.meta, self.sections.counts
        first_seen, last_seen = meta.get("first_seen"), meta.get("last_seen")
        return {
            "events_total": int(counts.get("events_total", 0)),
            "by_channel": {
                name[3:]: int(value) for name, value in sorted(counts.items()) if name[:3] == "ch:"
            },
            "first_seen": iso_from_ms(int(first_seen)) if first_seen else None,
            "last_seen": iso_from_ms(int(last_seen)) if last_seen else None,
        }

    def preferences(self) -> dict[str, Any]:
        # One pass over the weights ("ch:<source>" and "tod:<bucket>"); the heaviest
        # wins, ties go to the smaller name.
        channel = bucket = ""
        channel_weight = bucket_weight = -1.0
        for name, value in self.sections.weights.items():
            if name[:3] == "ch:":
                weight, key = float(value), name[3:]
                if weight > channel_weight or (weight == channel_weight and key < channel):
                    channel, channel_weight = key, weight
            elif name[:4] == "tod:":
                weight, key = float(value), name[4:]
                if weight > bucket_weight or (weight == bucket_weight and key < bucket):
                    bucket, bucket_weight = key, weight
        return {"channel": channel or None, "time_of_day": bucket or None}

    @cached_property
    def emotion(self) -> dict[str, Any]:
        return emotion_document(
            self.sections.registers, self.sections.sums, self.sections.negatives
        )

    def relationships(self) -> list[dict[str, Any]]:
        sections = self.sections
        return relationships(
            sections.registers, sections.counts, sections.weights, self.settings.closeness
        )

    @cached_property
    def indicators(self) -> dict[str, Any]:
        """Counting the accounts the person holds (``processors.accounts.holding``)."""
        sections = holding(self.sections, self.account_sections)
        return indicators(sections, self.settings.half_life_days, self.settings.population)

    def accounts(self) -> list[dict[str, Any]]:
        """Each account held: number, the person's role and its permissions, and the
        account's own stats, indicators and version; by account number."""
        registers = self.sections.registers
        out = []
        for number in sorted(self.held):
            role = role_name(registers.get(ROLE[2:] + number, ""))
            view = ProfileView(self.account_sections[number], [], self.settings)
            out.append(
                {
                    "account_no": number,
                    "role": role,
                    "permissions": sorted(self.settings.permissions.get(role or "", [])),
                    "stats": view.stats(),
                    "indicators": view.own_indicators(),
                    "version": view.version(),
                }
            )
        return out

    def own_indicators(self) -> dict[str, Any]:
        """Indicators of this state alone (an account's: its wealth among accounts)."""
        population = self.settings.population.accounts
        return indicators(self.sections, self.settings.half_life_days, population)

    def identity_rejections(self) -> list[dict[str, Any]]:
        """Identifiers the identity rules refused: kind, reason and how many times (never
        the value)."""
        out = []
        for name, count in sorted(self.sections.counts.items()):
            if name.startswith(REJECTED):
                kind, _, reason = name[len(REJECTED) :].partition(":")
                out.append({"kind": kind, "reason": reason, "count": int(count)})
        return out

    def roles(self) -> list[dict[str, Any]]:
        return roles(self.sections.registers, self.settings.permissions)

    def actions(self) -> list[dict[str, Any]]:
        return actions_towards_employees(self.sections.actions)

    def products(self) -> Any:
        return products_document(self.sections.registers)

    def keywords(self) -> Any:
        last_seen = int(self.sections.meta.get("last_seen", 0))
        latest = decay_weight(last_seen, self.settings.half_life_days) if last_seen else 1.0
        return keywords_document(self.sections.weights, latest, self.settings.keywords_top_k)

    @cached_property
    def intents(self) -> Any:
        return intents_document(self.sections.counts)

    def problems(self) -> Any:
        return problems_document(self.sections.registers)

    def needs(self) -> Any:
        if not self.settings.needs_rules:
            return []
        weights = self.sections.weights
        # indicators and emotion are built only when a rule gets as far as them
        return needs(
            self.settings.needs_rules,
            self.intents,
            lambda term: f"{KEYWORD}{term}" in weights,
            lambda: self.indicators,
            lambda: int(self.emotion["negative_streak"]),
        )


IDENTIFIERS = "ids"
"""A read that stands for the identifier set rather than a stored field."""
ACCOUNTS = "accts"
"""A read that stands for the person's account links."""

_STATS = ("c:events_total", "c:ch:", FIRST_SEEN, LAST_SEEN)
_EMOTION = ("r:emotion_last", "e:w", NEGATIVES.prefix)
_INDICATORS = ("d:ch:", LAST_SEEN, "c:act:", "r:friend:", "r:grp:", AMOUNT, ACCOUNTS)
_INTENTS = ("c:in:",)

FIELD_BUILDERS: dict[str, tuple[tuple[str, ...], Callable[[ProfileView], Any]]] = {
    "version": ((VERSION,), ProfileView.version),
    "identifiers": ((IDENTIFIERS,), ProfileView.identifiers),
    "attributes": (("a:",), ProfileView.attributes),
    "tags": (("t:",), ProfileView.tags),
    "stats": (_STATS, ProfileView.stats),
    "preferences": (("d:ch:", "d:tod:"), ProfileView.preferences),
    "emotion": (_EMOTION, lambda view: view.emotion),
    "relationships": (
        ("r:friend:", "r:grp:", "c:msg:", "d:emp:"),
        ProfileView.relationships,
    ),
    "indicators": (_INDICATORS, lambda view: view.indicators),
    "roles": ((ROLE,), ProfileView.roles),
    "accounts": ((ROLE, ACCOUNTS), ProfileView.accounts),
    "identity_rejections": ((COUNT + REJECTED,), ProfileView.identity_rejections),
    "actions": ((ACTIONS.prefix,), ProfileView.actions),
    "products": ((PRODUCT,), ProfileView.products),
    "keywords": ((KEYWORDS.prefix, LAST_SEEN), ProfileView.keywords),
    "intents": (_INTENTS, lambda view: view.intents),
    "needs": (
        (*_INTENTS, KEYWORDS.prefix, *_INDICATORS, *_EMOTION),
        ProfileView.needs,
    ),
    "problems": ((PROBLEMS.prefix, RESOLUTIONS.prefix), ProfileView.problems),
}
"""Document fields built from stored state, with the stored-field prefixes they read
(``tests/state/test_layout.py`` checks every one against full loads)."""


def _every_field(view: ProfileView) -> dict[str, Any]:
    """Every document field :data:`FIELD_BUILDERS` builds, from one view."""
    return {name: build(view) for name, (_, build) in FIELD_BUILDERS.items()}


def document_from_state(
    customer_id: str,
    state: StoredState,
    scores: dict[str, Any] | None = None,
    settings: DocumentSettings = DEFAULT_DOCUMENT,
    accounts: Mapping[str, AccountState] | None = None,
) -> dict[str, Any]:
    """The profile document for stored state and the accounts the person holds.

    ``scores`` is ``profile.scores`` as the customer-feature model gives it (see
    ``models/scorer.py``); without it the scores are empty.
    """
    view = ProfileView(sections_of(state["fields"]), state["ids"], settings, accounts)
    return {
        "customer_id": customer_id,
        **_every_field(view),
        "scores": scores if scores is not None else dict(EMPTY_SCORES),
    }


def empty_fields(settings: DocumentSettings = DEFAULT_DOCUMENT) -> dict[str, Any]:
    """Every built document field of a customer with no state: what a new customer's
    first update changes from (:func:`changed_fields` ``known``)."""
    return _every_field(ProfileView(sections_of({}), [], settings))


_NO_STREAK = {NEGATIVE_STREAK[2:]: "0"}  # how every answer shows an empty negative streak


def is_new(update: Update) -> bool:
    """Whether the state before the update was empty (a new customer)."""
    if update.ids_before or update.accounts_before:
        return False
    return all(
        not part or (kind == NEGATIVES.prefix[0] and part == _NO_STREAK)
        for kind, part in update.before.by_kind().items()
    )


ACCOUNT_FIELDS: dict[str, Callable[[ProfileView], Any]] = {
    "stats": ProfileView.stats,
    "indicators": ProfileView.own_indicators,
    "behaviour": lambda view: behaviour(view.sections.counts),
    "attributes": ProfileView.attributes,
    "version": ProfileView.version,
}
"""The account document's fields built from its own stored state (``people`` aside)."""


def account_document(
    account_no: str, state: AccountState, settings: DocumentSettings = DEFAULT_DOCUMENT
) -> dict[str, Any]:
    """The account document (docs/design.md "People and accounts"): number, people with
    their roles, stats, indicators, behaviour trail (counts per action), version."""
    view = ProfileView(sections_of(state.fields), [], settings)
    built = {name: build(view) for name, build in ACCOUNT_FIELDS.items()}
    return {"account_no": account_no, "people": people_document(state.people), **built}


def account_changes(
    before: Sections | None,
    after: Sections,
    people: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None,
    settings: DocumentSettings = DEFAULT_DOCUMENT,
) -> list[dict[str, Any]]:
    """The account document's fields that differ (``before`` None: built from
    ``after`` only, as for a link), ``people`` (old, new) when they may have changed."""
    changes = []
    if before is not None:
        old_view, new_view = ProfileView(before, [], settings), ProfileView(after, [], settings)
        for name, build in ACCOUNT_FIELDS.items():
            previous, current = build(old_view), build(new_view)
            if previous != current:
                changes.append({"field": name, "old": previous, "new": current})
    if people is not None and people[0] != people[1]:
        changes.append({"field": "people", "old": people[0], "new": people[1]})
    return changes


@dataclass(frozen=True, slots=True)
class Update:
    """A customer's stored state after an update and, rebuilt from the old values, before."""

    after: Sections
    before: Sections
    ids_after: list[str]
    ids_before: list[str]
    written: tuple[str, ...]
    """Names of the stored fields the update wrote (plus ``IDENTIFIERS`` when it added
    identifiers, ``ACCOUNTS`` when it linked accounts)."""
    accounts_after: Mapping[str, AccountState] = field(default_factory=dict)
    accounts_before: Mapping[str, AccountState] = field(default_factory=dict)

    def held(self, which: str) -> Sections:
        """The ``after`` or ``before`` sections with the accounts held added in
        (``processors.accounts.holding``): what indicators and features read."""
        sections, accounts = (
            (self.after, self.accounts_after)
            if which == "after"
            else (self.before, self.accounts_before)
        )
        return holding(sections, {n: sections_of(a.fields) for n, a in accounts.items()})


def update_of(
    after: StoredState,
    old: dict[str, str | None],
    ids_added: list[str],
    accounts: Mapping[str, AccountState] | None = None,
    links_added: Sequence[str] = (),
) -> Update:
    """The before/after view of one update (``old``: field → value before, None = absent;
    ``accounts``: those held after it, ``links_added`` those it linked)."""
    after_sections = sections_of(after["fields"])
    before = after_sections.copy({name[0] for name in old})
    parts = before.by_kind()
    for name, value in old.items():
        section = parts.get(name[0])
        if section is None:
            continue
        if value is None:
            section.pop(name[2:], None)
        else:
            section[name[2:]] = value
    added = set(ids_added)
    ids_before = [key for key in after["ids"] if key not in added]
    written = (*old, IDENTIFIERS) if added else tuple(old)
    accounts = accounts or {}
    if links_added:
        written = (*written, ACCOUNTS)
    accounts_before = {n: a for n, a in accounts.items() if n not in links_added}
    return Update(
        after_sections, before, after["ids"], ids_before, written, accounts, accounts_before
    )


def _fields_reading(stored: str) -> frozenset[str]:
    """The document fields whose builders read this stored field. A family's members
    (an action, a keyword, a problem: a new name nearly every update) all read as their
    family's prefix, which no builder's prefix extends (``tests/processors``)."""
    family = family_of(stored)
    return _prefix_reading(family.prefix if family is not None else stored)


@lru_cache(maxsize=65_536)
def _prefix_reading(stored: str) -> frozenset[str]:
    # names repeat across updates: worked out once per name, not per field and update
    return frozenset(
        name for name, (reads, _) in FIELD_BUILDERS.items() if stored.startswith(reads)
    )


def changed_fields(
    update: Update,
    derived: dict[str, tuple[Any, Any]] | None = None,
    settings: DocumentSettings = DEFAULT_DOCUMENT,
    known: Mapping[str, Any] | None = None,
    built: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Top-level document fields that differ before and after an update, old and new.

    Only the fields that read a written stored field are built. ``derived`` gives
    (old, new) of fields computed elsewhere, such as model scores. ``known``: fields
    already built for the state before the update (the same customer's previous update
    built them as its state after), taken instead of built again; ``built`` receives
    every field built for the state after.
    """
    before = ProfileView(update.before, update.ids_before, settings, update.accounts_before)
    after = ProfileView(update.after, update.ids_after, settings, update.accounts_after)
    known = known or {}
    changes = []
    affected: set[str] = set()
    for written in update.written:
        affected |= _fields_reading(written)
    for name, (_, build) in FIELD_BUILDERS.items():
        if name in affected:
            previous = known[name] if name in known else build(before)
            current = build(after)
            if built is not None:
                built[name] = current
            if previous != current:
                changes.append({"field": name, "old": previous, "new": current})
    for name, (previous, current) in (derived or {}).items():
        if previous != current:
            changes.append({"field": name, "old": previous, "new": current})
    return changes
