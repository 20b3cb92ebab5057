"""Looking a profile up by any of its identifiers."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from models.customer_model import CustomerModel, default_customer_model
from models.scorer import score_sections
from portrait.state.store import ProfileStore
from processors.document import DocumentSettings, document_from_state, sections_of
from processors.identity import normalise_identifier
from processors.indicators import Population


async def find_customer(store: ProfileStore, kind: str, value: str) -> str | None:
    """Live customer id for an identifier (``customer_id`` also matches Portrait's own ids)."""
    if kind == "customer_id":
        own = await store.follow(value.strip())
        if own is not None:
            return own
    found = await store.resolve(f"{kind}:{normalise_identifier(kind, value)}")
    return await store.follow(found) if found else None


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
    customer_id = await find_customer(store, kind, value)
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
    scorer = model or default_customer_model()
    [scores] = score_sections(scorer, [sections_of(state["fields"])])
    population = Population.of(await store.population())
    document_settings = replace(settings or DocumentSettings(), population=population)
    return document_from_state(customer_id, state, scores, document_settings)
