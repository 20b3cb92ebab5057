from zoneinfo import ZoneInfo

import orjson
import pytest

from portrait.events import INPUT_EVENT_ADAPTER, ProfileDocument
from processors.attributes import encode_register, order_key
from processors.document import (
    FIELD_BUILDERS,
    StoredState,
    _fields_reading,
    changed_fields,
    document_from_state,
    update_of,
)
from processors.identity import customer_id_for
from processors.layout import FAMILIES
from processors.profile import DeltaSettings, ProfileDelta, build_delta
from tests.support.envelopes import event

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
    assert delta.identifiers == ["phone:+8613800138000"]
    assert delta.accounts == ["A1"]
    assert delta.new_customer_id == customer_id_for("phone:+8613800138000")
    assert set(delta.fields) == {
        "c:events_total",
        "c:ch:app",
        "c:act:login",
        "d:ch:app",
        "d:tod:evening",
        "a:birthday",
        "a:city",
    }
    assert delta.fields["c:events_total"] == 1
    payload = orjson.loads(str(delta.fields["a:birthday"]).split("\t", 1)[1])
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
    assert {
        k: v for k, v in delta.fields.items() if not k.startswith(("c:msg:", "d:emp:", "r:met:"))
    } == {
        "c:events_total": 1,
        "c:ch:wecom": 1,
    }
    assert delta.fields["c:msg:emp"] == 1  # the exchange still counts towards closeness


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
    assert str(delta.fields["a:city"]).startswith("1|")
    assert orjson.loads(str(delta.fields["a:company"]).split("\t", 1)[1])["value"] is None
    assert str(delta.fields["t:vip"]).endswith("\t1")
    assert str(delta.fields["t:churn"]).endswith("\t0")


def test_erasure_carries_only_identifiers() -> None:
    delta = delta_for(
        event("e4", "customer.erasure", "2026-11-01T09:00:00Z", "crm", {"phone": "138"}, {})
    )
    assert delta.erase and delta.fields == {} and delta.identifiers == ["phone:138"]


def stored_state() -> StoredState:
    register = {"source": "app", "confidence": 0.9, "updated_at": "2026-11-01T00:00:00.000Z"}
    return {
        "fields": {
            "m:version": "3",
            "m:first_seen": "1761955200000",
            "m:last_seen": "1762041600000",
            "c:events_total": "3",
            "c:ch:app": "2",
            "c:ch:web": "1",
            "d:ch:app": "5.0",
            "d:ch:web": "7.5",
            "d:tod:evening": "12.5",
            "a:city": encode_register(order_key(False, 1, "e"), {"value": "上海", **register}),
            "a:company": encode_register(order_key(True, 2, "f"), {"value": None, **register}),
            "t:vip": "1|x\t1",
            "t:churn": "1|y\t0",
        },
        "ids": ["phone:138", "account_no:A1", "im_id:wx:1"],
    }


def test_document_has_every_fixed_field_and_validates() -> None:
    doc = document_from_state("c-1", stored_state())
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


def test_preference_ties_go_to_the_smaller_name() -> None:
    state = stored_state()
    state["fields"].update({"d:ch:app": "7.5", "d:ch:zz": "7.5", "d:tod:morning": "12.5"})
    doc = document_from_state("c-1", state)
    assert doc["preferences"] == {"channel": "app", "time_of_day": "evening"}


def test_changed_fields_rebuild_the_before_side_from_old_values() -> None:
    after = stored_state()
    old: dict[str, str | None] = {"m:version": "2", "c:events_total": "2", "c:ch:web": None}
    changes = {c["field"]: c for c in changed_fields(update_of(after, old, ["im_id:wx:1"]))}
    assert set(changes) == {"version", "stats", "identifiers"}
    assert changes["stats"]["old"]["by_channel"] == {"app": 2}
    assert changes["stats"]["old"]["events_total"] == 2
    assert changes["identifiers"]["old"]["im_id"] == []
    assert changes["identifiers"]["new"]["im_id"] == ["wx:1"]


def test_changed_fields_lists_old_and_new_of_what_was_written() -> None:
    after = stored_state()
    old: dict[str, str | None] = {name: None for name in after["fields"]}
    changes = changed_fields(update_of(after, old, list(after["ids"])))
    names = [c["field"] for c in changes]
    assert names == [
        "version",
        "identifiers",
        "attributes",
        "tags",
        "stats",
        "preferences",
        "indicators",
    ]
    stats = changes[names.index("stats")]
    assert stats["old"]["events_total"] == 0 and stats["new"]["events_total"] == 3
    only_count = changed_fields(update_of(after, {"c:ch:web": "0"}, []))
    assert [c["field"] for c in only_count] == ["stats"]
    assert changed_fields(update_of(after, {"a:city": after["fields"]["a:city"]}, [])) == []
    only_version = changed_fields(update_of(after, {"m:version": "2"}, []))
    assert only_version == [{"field": "version", "old": 2, "new": 3}]


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
    assert data["fields"] == delta.fields


def test_imported_past_interactions_count_as_actions() -> None:
    delta = delta_for(
        event(
            "i1",
            "source.imported",
            "2026-01-01T00:00:00Z",
            "crm",
            {"phone": "1"},
            {
                "attributes": {"tier": "gold"},
                "interactions": [
                    {"action": "complaint"},
                    {"action": "complaint"},
                    {"action": "bad\u0000name"},
                    {"note": "no action"},
                ],
            },
        )
    )
    assert delta.fields["c:act:complaint"] == 2
    assert not any("bad" in name for name in delta.fields)
    assert "a:tier" in delta.fields


def test_a_family_member_reads_as_its_family_prefix() -> None:
    # _fields_reading answers a family's members by the family's prefix, which holds
    # only while no builder reads a longer prefix inside a family
    for family in FAMILIES:
        for name, (reads, _) in FIELD_BUILDERS.items():
            assert not any(r.startswith(family.prefix) and r != family.prefix for r in reads), name
        member = f"{family.prefix}000001793500000|e-1\temp-1"
        direct = {n for n, (reads, _) in FIELD_BUILDERS.items() if member.startswith(reads)}
        assert _fields_reading(member) == direct and direct
