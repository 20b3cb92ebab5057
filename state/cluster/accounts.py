"""Events that name only accounts, and the account states an answer shows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from processors.accounts import AccountState
from processors.layout import (
    ACCOUNT_ENTITY,
    PENDING_KEY,
    PEOPLE_KEY,
    PROFILE_KEY,
    ROLE,
    sections_of,
)
from processors.layout import ENTITY_SEP as ES
from processors.layout import RECORD_SEP as RS
from processors.relationships import connected_employees
from state.answers import (
    AccountsApplied,
    Applied,
    ApplyResult,
    Duplicate,
    parse_answer,
    text_of,
)
from state.cluster.base import (
    ClusterBase,
    dump_states,
    load_states,
    pending_accounts,
)


class AccountSteps(ClusterBase):
    """Events that name only accounts, and the account states an answer shows."""

    async def _accounts_event(
        self, d: dict[str, Any], kept: list[tuple[str, str, str]]
    ) -> ApplyResult:
        """An event with no person identifier: one call per account it names."""
        answers = []
        for n, acct in enumerate(d["accts"]):
            entity = ACCOUNT_ENTITY + acct
            step = {**d, "accts": [acct], "later": n > 0}
            [reply] = await self._call(self.key(entity, PROFILE_KEY), orjson.dumps(step))
            if isinstance(reply, bytes):
                return parse_answer(reply)
            if reply[1]:
                kept.append((entity, d["eid"], text_of(reply[1])))
            answers.append(text_of(reply[0]))
        if d.get("quiet"):
            return parse_answer(answers[0].encode("utf-8"))
        fresh = [a[5:] for a in answers if a.startswith("acct" + RS)]
        again = [a[9:] for a in answers if a.startswith(f"dup{RS}acct{RS}")]
        if fresh:
            text = f"acct{RS}" + ES.join(fresh + again)
        elif again:
            text = f"dup{RS}acct{RS}" + ES.join(again)
        else:
            text = answers[0]
        result = parse_answer(text.encode("utf-8"))
        await self._fill_accounts(result, d["eid"])
        return result

    async def _fill_accounts(self, result: ApplyResult, eid: str) -> None:
        """The people of each account an account-only event applied to (they live on
        other slots), kept beside the account's pending outputs for a redelivery."""
        first = result.accounts if isinstance(result, AccountsApplied) else []
        for applied in first:
            if applied.account_no is not None:
                applied.people, notify = await self._people_of(applied.account_no)
                applied.notify = notify
                key = self.key(ACCOUNT_ENTITY + applied.account_no, PENDING_KEY)
                await self.redis.hset(
                    key, pending_accounts(eid), orjson.dumps([applied.people, notify])
                )
        replay = result.replay if isinstance(result, Duplicate) else None
        for applied in replay.accounts if isinstance(replay, AccountsApplied) else []:
            if applied.account_no is not None:
                key = self.key(ACCOUNT_ENTITY + applied.account_no, PENDING_KEY)
                raw = await self.redis.hget(key, pending_accounts(eid))
                if raw:  # else the worker stopped between the call and the record
                    applied.people, applied.notify = orjson.loads(raw)
                else:
                    applied.people, applied.notify = await self._people_of(applied.account_no)

    async def _people_of(self, acct: str) -> tuple[dict[str, str], list[str]]:
        """An account's people with their role registers, and the employees connected to
        any of them (the script's ``people_of``)."""
        people = sorted(
            text_of(p)
            for p in await self.redis.smembers(self.key(ACCOUNT_ENTITY + acct, PEOPLE_KEY))
        )
        roles, notify = {}, set()
        for person in people:
            fields = {
                text_of(k): text_of(v)
                for k, v in (await self.redis.hgetall(self.key(person, PROFILE_KEY))).items()
            }
            roles[person] = fields.get(ROLE + acct, "")
            notify.update(connected_employees(sections_of(fields).registers))
        return roles, sorted(notify)

    async def _fill_person(self, result: ApplyResult, step: Mapping[str, Any], person: str) -> None:
        """The accounts a person's answer lists, with their hashes, and the people of those
        the event named (they live on other slots). Kept beside the event's pending
        outputs, so that a redelivery re-emits them as they were, not as they are."""
        kept = self.key(person, PENDING_KEY), pending_accounts(step["eid"])
        if isinstance(result, Applied) and result.accounts:
            states = await self._account_states(result, step)
            result.accounts.update(states)
            await self.redis.hset(*kept, dump_states(states))
        replay = result.replay if isinstance(result, Duplicate) else None
        if isinstance(replay, Applied) and replay.accounts:
            raw = await self.redis.hget(*kept)
            # no record: the worker stopped between the call and the record
            replay.accounts.update(
                load_states(raw) if raw else await self._account_states(replay, step)
            )

    async def _account_states(
        self, result: Applied, step: Mapping[str, Any]
    ) -> dict[str, AccountState]:
        named = set(step.get("accts") or []) | set(result.links_added)
        states = {}
        for acct in result.accounts:
            raw = await self.redis.hgetall(self.key(ACCOUNT_ENTITY + acct, PROFILE_KEY))
            people: dict[str, str] = {}
            notify: list[str] = []
            if acct in named:
                people, notify = await self._people_of(acct)
            states[acct] = AccountState(
                {text_of(k): text_of(v) for k, v in raw.items()}, people, tuple(notify)
            )
        return states
