"""How an output goes onto its topic: every field of the model, its id naming its content."""

from __future__ import annotations

import random
from typing import Any

import orjson

from portrait.events import ProfileChanged
from processors.document import document_from_state
from processors.outputs import OutputOrigin, encode, encode_profile_changed, profile_changed


def _change(at: str, new: int) -> ProfileChanged:
    applied = OutputOrigin("in-1", "c-1", 7, ["emp-1"], at)
    return profile_changed(applied, [{"field": "version", "old": 6, "new": new}])


def test_an_output_carries_every_field_once_and_its_id_names_its_content() -> None:
    output = _change("2026-12-03T10:00:00.000Z", 7)
    body = orjson.loads(encode(output))
    # every field the model holds, each once, the id aside
    assert body == {
        **output.model_dump(mode="json", exclude_unset=True),
        "event_id": body["event_id"],
    }
    assert encode(output).count(b'"emitted_at"') == 1
    ProfileChanged.model_validate(body)
    # the same content at another moment: the same id; other content: another id
    later = orjson.loads(encode(_change("2026-12-03T11:00:00.000Z", 7)))
    other = orjson.loads(encode(_change("2026-12-03T10:00:00.000Z", 8)))
    assert later["event_id"] == body["event_id"] != other["event_id"]
    assert later["emitted_at"] != body["emitted_at"] and len(body["event_id"]) == 32


def _value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 7, 2**53 + 1, -(2**62), rng.randrange(-(10**9), 10**9)])
    if kind == 3:
        return rng.choice([0.1 + 0.2, -0.0, 1e-7, 1e21, 123456.789, 0.5, rng.uniform(-1e6, 1e6)])
    if kind in (4, 5):
        pieces = ["上海", 'a"b', "back\\slash", "\u2028", "\x01", "😀", "tab\there", "", "plain"]
        return "".join(rng.choice(pieces) for _ in range(rng.randrange(4)))
    if kind in (6, 7):
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {
        f"k{i}{rng.choice(['', 'é', ' '])}": _value(rng, depth + 1) for i in range(rng.randrange(4))
    }


def test_a_profile_change_encodes_as_its_typed_model_does() -> None:
    """The worker encodes profile.changed without building the model: byte for byte what
    the model gives, whatever the old and new values hold."""
    rng = random.Random(3)
    document = document_from_state(
        "c-9",
        {
            "fields": {"m:version": "3", "a:city": '0001\t{"value": "上海", "source": "crm"}'},
            "ids": [],
        },
    )
    for n in range(300):
        applied = OutputOrigin(f"in-{n}", f"c-{n % 7}", n, [f"emp-{i}" for i in range(n % 3)], "t")
        changes = [{"field": f"f{i}", "old": _value(rng), "new": _value(rng)} for i in range(n % 5)]
        changes += [{"field": name, "old": None, "new": value} for name, value in document.items()]
        expected = encode(profile_changed(applied, changes))
        assert encode_profile_changed(applied, changes) == expected
