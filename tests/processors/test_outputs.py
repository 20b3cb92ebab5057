"""How an output goes onto its topic: every field of the model, its id naming its content."""

from __future__ import annotations

import orjson

from portrait.events import ProfileChanged
from processors.outputs import Applied, encode, profile_changed


def _change(at: str, new: int) -> ProfileChanged:
    applied = Applied("in-1", "c-1", 7, ["emp-1"], at)
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
