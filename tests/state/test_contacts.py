"""Each agent's current customer: the contact that occurred last wins, in any order."""

from __future__ import annotations

from portrait.config import Settings
from state.store import Contact
from tests.support.state import raw_client, with_store


def test_the_newest_contact_wins_whatever_the_arrival_order(redis_settings: Settings) -> None:
    first = Contact("agent-1", "c-old", 1_000, "call-1")
    newer = Contact("agent-1", "c-new", 2_000, "conv-2")
    other = Contact("agent-2", "c-x", 1_500, "call-3")

    async def go(store: object) -> tuple[Contact | None, Contact | None, Contact | None]:
        assert hasattr(store, "record_contacts")
        await store.record_contacts([newer, other], 3600)  # type: ignore[attr-defined]
        await store.record_contacts([first], 3600)  # late, older: changes nothing
        await store.record_contacts([first, newer], 3600)  # one batch: the newest
        return (
            await store.current_contact("agent-1"),  # type: ignore[attr-defined]
            await store.current_contact("agent-2"),  # type: ignore[attr-defined]
            await store.current_contact("agent-3"),  # type: ignore[attr-defined]
        )

    one, two, none = with_store(redis_settings, go)
    assert one == newer and two == other and none is None
    client = raw_client(redis_settings.redis_url)
    ttl = client.ttl(f"{redis_settings.redis_key_prefix}agent:{{agent-1}}")
    assert 0 < ttl <= 3600
