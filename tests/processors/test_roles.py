from zoneinfo import ZoneInfo

from portrait.config import Settings
from portrait.events import INPUT_EVENT_ADAPTER
from processors.document import document_from_state, document_settings
from processors.profile import DeltaSettings, build_delta
from processors.roles import role_fields, roles
from tests.support.envelopes import event


def test_a_role_attribute_is_a_role_on_each_account_of_the_event() -> None:
    fields = role_fields({"role": " Family Member "}, ["A-1", "A-2"], 5, "e")
    assert fields == {
        "r:role:A-1": "000000000000005|e\tfamily_member",
        "r:role:A-2": "000000000000005|e\tfamily_member",
    }
    assert role_fields({"role": "agent"}, [], 5, "e") == {}
    assert role_fields({"name": "x"}, ["A-1"], 5, "e") == {}


def test_roles_come_with_the_configured_permissions() -> None:
    table = document_settings(Settings()).permissions
    registers = {"role:A-1": "1|e\tfamily_member", "role:B-9": "1|f\tmystery", "calm": "x"}
    assert roles(registers, table) == [
        {
            "account_no": "A-1",
            "role": "family_member",
            "permissions": ["pay_bill", "query_bill", "report_outage"],
        },
        {"account_no": "B-9", "role": "mystery", "permissions": []},
    ]


def test_the_profile_shows_roles_from_a_channel_event() -> None:
    raw = event(
        "r1",
        "channel.event",
        "2026-11-01T00:00:00Z",
        "app",
        {"account_no": "A-1", "phone": "1"},
        {"action": "login", "attributes": {"role": "account_holder"}},
    )
    delta = build_delta(
        INPUT_EVENT_ADAPTER.validate_python(raw), DeltaSettings(timezone=ZoneInfo("UTC"))
    )
    state = {"fields": {k: str(v) for k, v in delta.fields.items()}, "ids": delta.identifiers}
    document = document_from_state("c-1", state, None, document_settings(Settings()))  # type: ignore[arg-type]
    [role] = document["roles"]
    assert role["account_no"] == "A-1" and role["role"] == "account_holder"
    assert "close_account" in role["permissions"]
