import orjson
import pytest

from portrait.events import ChannelEvent, ChatMessage
from processors.envelope import Rejection, decode_event
from tests.support.envelopes import event

GOOD = event(
    "e1",
    "chat.message",
    "2026-11-01T10:00:00+08:00",
    "wecom",
    {"im_id": "wx1"},
    {"conversation_id": "c1", "direction": "inbound", "employee_id": "emp1", "text": "你好"},
)


def encode(value: object) -> bytes:
    return orjson.dumps(value)


def test_valid_event_decodes_to_its_type() -> None:
    decoded = decode_event(encode(GOOD), 10_000)
    assert isinstance(decoded, ChatMessage)
    assert decoded.payload.direction == "inbound"
    assert decoded.customer.pairs() == [("im_id", "wx1")]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\xff\xfe not utf-8", "invalid_utf8"),
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_event"),
        (encode({**GOOD, "type": "chat.deleted"}), "unknown_type"),
        (encode({k: v for k, v in GOOD.items() if k != "event_id"}), "invalid_event"),
        (encode({**GOOD, "customer": {}}), "invalid_event"),
        (encode({**GOOD, "occurred_at": "yesterday"}), "invalid_event"),
        (encode({**GOOD, "occurred_at": "2026-11-01T10:00:00"}), "invalid_event"),
        (encode({**GOOD, "event_id": "x" * 129}), "invalid_event"),
        (
            encode({**GOOD, "payload": {**GOOD["payload"], "direction": "sideways"}}),
            "invalid_event",
        ),
        (None, "empty"),
    ],
)
def test_bad_input_is_rejected_with_a_reason(raw: bytes | None, code: str) -> None:
    decoded = decode_event(raw, 10_000)
    assert isinstance(decoded, Rejection)
    assert decoded.code == code


def test_oversized_record_is_rejected_before_parsing() -> None:
    decoded = decode_event(encode(GOOD), 100)
    assert isinstance(decoded, Rejection) and decoded.code == "too_large"


def test_reason_never_contains_the_offending_values() -> None:
    bad = {**GOOD, "customer": {"phone": 13800138000}, "payload": {"text": "secret words"}}
    decoded = decode_event(encode(bad), 10_000)
    assert isinstance(decoded, Rejection)
    assert "13800138000" not in decoded.reason
    assert "secret" not in decoded.reason
    assert "customer.phone" in decoded.reason


def test_identifier_lists_are_accepted() -> None:
    raw = encode(
        event(
            "e2",
            "channel.event",
            "2026-11-01T10:00:00Z",
            "app",
            {"phone": ["138 0013 8000", "139"], "email": "A@B.com"},
            {"action": "login"},
        )
    )
    decoded = decode_event(raw, 10_000)
    assert isinstance(decoded, ChannelEvent)
    assert decoded.customer.pairs() == [
        ("phone", "138 0013 8000"),
        ("phone", "139"),
        ("email", "A@B.com"),
    ]


def test_control_characters_in_ids_and_names_are_rejected() -> None:
    for bad in (
        {**GOOD, "event_id": "e\x1f1"},
        {**GOOD, "source": "we\x1ecom"},
        {**GOOD, "customer": {"im_id": "wx\x1d"}},
    ):
        decoded = decode_event(encode(bad), 10_000)
        assert isinstance(decoded, Rejection) and decoded.code == "invalid_event"
