"""Looking a profile up by any of its identifiers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from models.customer_model import CustomerModel, default_customer_model
from models.scorer import score_sections
from portrait.events import ACCOUNT_KIND
from processors.accounts import AccountState, holding
from processors.document import (
    DocumentSettings,
    StoredState,
    account_document,
    document_from_state,
)
from processors.identity import normalise_identifier
from processors.indicators import Population
from processors.layout import sections_of
from state.store import ProfileStore, RedisProfileStore


class SeveralPeople(LookupError):
    """An account number names an account held by more than one person."""

    def __init__(self, count: int) -> None:
        super().__init__(f"{count} people hold this account")
        self.count = count


async def find_customer(
    store: ProfileStore, kind: str, value: str, region: str = "CN"
) -> str | None:
    """Live customer id for an identifier (``customer_id`` also matches Portrait's own
    ids). An ``account_no`` finds the one person linked to the account; several raise
    :class:`SeveralPeople`."""
    if kind == "customer_id":
        own = await store.follow(value.strip())
        if own is not None:
            return own
    if kind == ACCOUNT_KIND:
        account = await store.load_account(value.strip())
        people = sorted(account.people) if account else []
        if len(people) > 1:
            raise SeveralPeople(len(people))
        return await store.follow(people[0]) if people else None
    found = await store.resolve(f"{kind}:{normalise_identifier(kind, value, region)}")
    return await store.follow(found) if found else None


async def get_account(
    store: ProfileStore, account_no: str, settings: DocumentSettings | None = None
) -> dict[str, Any] | None:
    """The account document for an account number, or None when no account has it."""
    account = await store.load_account(account_no.strip())
    if account is None:
        return None
    population = Population.of(await store.population())
    document_settings = replace(settings or DocumentSettings(), population=population)
    return account_document(account_no.strip(), account, document_settings)


async def get_profile(
    store: ProfileStore,
    kind: str,
    value: str,
    model: CustomerModel | None = None,
    settings: DocumentSettings | None = None,
) -> dict[str, Any] | None:
    """The profile document for an identifier, or None when no customer has it.

    ``model`` scores it (the version the workers use; default: the shipped one).
    """
    region = settings.region if settings is not None else "CN"
    customer_id = await find_customer(store, kind, value, region)
    if customer_id is None:
        return None
    return await profile_by_id(store, customer_id, model, settings)


async def profile_by_id(
    store: ProfileStore,
    customer_id: str,
    model: CustomerModel | None = None,
    settings: DocumentSettings | None = None,
) -> dict[str, Any] | None:
    """The profile document of a live customer id (no redirects followed), or None."""
    state = await store.load(customer_id)
    if state is None:
        return None
    accounts = await store.accounts_of(customer_id)
    population = Population.of(await store.population())
    return scored_document(customer_id, state, accounts, model, settings, population)


async def profiles_by_id(
    store: RedisProfileStore,
    customer_ids: Sequence[str],
    model: CustomerModel | None = None,
    settings: DocumentSettings | None = None,
) -> dict[str, dict[str, Any] | None]:
    """Documents of several live customer ids (None for an id with no profile): one
    transaction for their states, one read of each account they hold and of the
    population, and one scoring call for all of them."""
    loaded = await store.load_many(customer_ids)
    numbers = sorted({n for found in loaded.values() if found for n in found[1]})
    accounts = {n: a for n in numbers if (a := await store.load_account(n)) is not None}
    population = Population.of(await store.population())
    live = [
        (cid, found[0], {n: accounts[n] for n in found[1] if n in accounts})
        for cid, found in loaded.items()
        if found is not None
    ]
    documents = scored_documents(live, model, settings, population)
    out: dict[str, dict[str, Any] | None] = dict.fromkeys(customer_ids)
    out.update((cid, document) for (cid, _, _), document in zip(live, documents, strict=True))
    return out


def scored_document(
    customer_id: str,
    state: StoredState,
    accounts: dict[str, AccountState],
    model: CustomerModel | None,
    settings: DocumentSettings | None,
    population: Population,
) -> dict[str, Any]:
    """A person's document from its loaded state and accounts, scored by ``model``
    (default: the shipped one) against ``population``."""
    [document] = scored_documents([(customer_id, state, accounts)], model, settings, population)
    return document


def scored_documents(
    loaded: Sequence[tuple[str, StoredState, dict[str, AccountState]]],
    model: CustomerModel | None,
    settings: DocumentSettings | None,
    population: Population,
) -> list[dict[str, Any]]:
    """People's documents from their loaded states and accounts, in order, scored in one
    model call."""
    sections = [
        holding(sections_of(state["fields"]), {n: sections_of(a.fields) for n, a in held.items()})
        for _, state, held in loaded
    ]
    scores = score_sections(model or default_customer_model(), sections)
    document_settings = replace(settings or DocumentSettings(), population=population)
    return [
        document_from_state(cid, state, score, document_settings, held)
        for (cid, state, held), score in zip(loaded, scores, strict=True)
    ]
