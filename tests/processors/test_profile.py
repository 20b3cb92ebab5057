from zoneinfo import ZoneInfo

import orjson
import pytest

from portrait.events import INPUT_EVENT_ADAPTER, ProfileDocument
from processors.attributes import encode_register, order_key
from processors.identity import customer_id_for
from processors.profile import (
    DeltaSettings,
    ProfileDelta,
    build_delta,
    changed_fields,
    document_from_state,
    empty_state,
    state_before,
)
from tests.conftest import event

SETTINGS = DeltaSettings(timezone=ZoneInfo("Asia/Shanghai"))


def delta_for(raw: dict[str, object]) -> ProfileDelta:
    return build_delta(INPUT_EVENT_ADAPTER.validate_python(raw), SETTINGS)


def test_channel_event_counts_weighs_and_sets_attributes() -> None:
    delta = delta_for(
        event(
            "e1",
            "channel.event",
            "2026-11-01T20:00:00+08:00",
            "app",
            {"phone": "138-0013-8000", "account_no": "A1"},
            {"action": "login", "attributes": {"Birthday": "1985/3/7", "City": "上海"}},
        )
    )
    assert delta.identifiers == ["account_no:A1", "phone:13800138000"]
    assert delta.new_customer_id == customer_id_for("account_no:A1")
    assert delta.counters == {"events_total": 1, "ch:app": 1}
    assert set(delta.weights) == {"ch:app", "tod:evening"}
    assert set(delta.attributes) == {"birthday", "city"}
    payload = orjson.loads(delta.attributes["birthday"].split("\t", 1)[1])
    assert payload == {
        "value": "1985-03-07",
        "source": "app",
        "confidence": 0.9,
        "updated_at": "2026-11-01T12:00:00.000Z",
    }


def test_outbound_chat_counts_but_does_not_shape_preferences() -> None:
    delta = delta_for(
        event(
            "e2",
            "chat.message",
            "2026-11-01T09:00:00+08:00",
            "wecom",
            {"im_id": "wx"},
            {"conversation_id": "c", "direction": "outbound", "employee_id": "emp"},
        )
    )
    assert delta.counters == {"events_total": 1, "ch:wecom": 1}
    assert delta.weights == {}


def test_manual_edit_makes_manual_registers_tags_and_tombstones() -> None:
    delta = delta_for(
        event(
            "e3",
            "profile.edited",
            "2026-11-01T09:00:00+08:00",
            "crm",
            {"account_no": "A1"},
            {
                "editor_id": "emp",
                "set": {"city": "杭州"},
                "unset": ["company"],
                "tags_add": ["vip"],
                "tags_remove": ["churn"],
            },
        )
    )
    assert delta.attributes["city"].startswith("1|")
    assert orjson.loads(delta.attributes["company"].split("\t", 1)[1])["value"] is None
    assert delta.tags["vip"].endswith("\t1") and delta.tags["churn"].endswith("\t0")


def test_erasure_carries_only_identifiers() -> None:
    delta = delta_for(
        event("e4", "customer.erasure", "2026-11-01T09:00:00Z", "crm", {"phone": "138"}, {})
    )
    assert delta.erase and delta.counters == {} and delta.identifiers == ["phone:138"]


def stored_state() -> dict[str, object]:
    state = empty_state()
    state["meta"] = {"version": "3", "first_seen": "1761955200000", "last_seen": "1762041600000"}
    state["cnt"] = {"events_total": "3", "ch:app": "2", "ch:web": "1"}
    state["dec"] = {"ch:app": "5.0", "ch:web": "7.5", "tod:evening": "12.5"}
    state["attr"] = {
        "city": encode_register(
            order_key(False, 1, "e"),
            {
                "value": "上海",
                "source": "app",
                "confidence": 0.9,
                "updated_at": "2026-11-01T00:00:00.000Z",
            },
        ),
        "company": encode_register(
            order_key(True, 2, "f"),
            {
                "value": None,
                "source": "manual",
                "confidence": 1.0,
                "updated_at": "2026-11-01T00:00:00.000Z",
            },
        ),
    }
    state["tag"] = {"vip": "1|x\t1", "churn": "1|y\t0"}
    state["ids"] = ["phone:138", "account_no:A1", "im_id:wx:1"]
    return state  # type: ignore[return-value]


def test_document_has_every_fixed_field_and_validates() -> None:
    doc = document_from_state("c-1", stored_state())  # type: ignore[arg-type]
    ProfileDocument.model_validate(doc)
    assert doc["version"] == 3
    assert doc["identifiers"]["phone"] == ["138"] and doc["identifiers"]["im_id"] == ["wx:1"]
    assert list(doc["attributes"]) == ["city"]  # the unset (tombstoned) attribute is hidden
    assert doc["tags"] == ["vip"]
    assert doc["stats"] == {
        "events_total": 3,
        "by_channel": {"app": 2, "web": 1},
        "first_seen": "2025-11-01T00:00:00.000Z",
        "last_seen": "2025-11-02T00:00:00.000Z",
    }
    assert doc["preferences"] == {"channel": "web", "time_of_day": "evening"}


def test_state_before_undoes_touched_fields_only() -> None:
    after = stored_state()
    old = {"meta": {"version": "2"}, "cnt": {"events_total": "2", "ch:web": False}}
    before = state_before(after, old, ids_added=["im_id:wx:1"])  # type: ignore[arg-type]
    assert before["meta"]["version"] == "2"
    assert before["cnt"] == {"events_total": "2", "ch:app": "2"}
    assert before["ids"] == ["phone:138", "account_no:A1"]
    assert before["attr"] == after["attr"]  # type: ignore[index]


def test_changed_fields_lists_old_and_new() -> None:
    new = document_from_state("c-1", stored_state())  # type: ignore[arg-type]
    old = document_from_state("c-1", empty_state())
    names = [c["field"] for c in changed_fields(old, new)]
    assert names == ["version", "identifiers", "attributes", "tags", "stats", "preferences"]
    assert changed_fields(new, new) == []


@pytest.mark.parametrize("direction", ["inbound", "outbound"])
def test_to_json_is_what_the_script_reads(direction: str) -> None:
    delta = delta_for(
        event(
            "e5",
            "chat.message",
            "2026-11-01T09:00:00Z",
            "wecom",
            {"im_id": "wx"},
            {"conversation_id": "c", "direction": direction, "employee_id": "emp"},
        )
    )
    data = orjson.loads(delta.to_json(now_ms=5, retention_ms=7))
    assert data["eid"] == "e5" and data["now"] == 5 and data["ret"] == 7
    assert data["ids"] == ["im_id:wx"] and data["newcid"] == customer_id_for("im_id:wx")
