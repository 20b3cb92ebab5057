import orjson
import pytest

from portrait.config import Settings
from streams.produce import Unroutable, jsonl_lines, route
from tests.support.envelopes import event

SETTINGS = Settings(topic_prefix="p.")


def routed(raw: dict[str, object]) -> tuple[str, bytes | None]:
    record = route(SETTINGS, orjson.dumps(raw))
    return record.topic, record.key


def test_each_type_goes_to_its_topic_with_the_design_key() -> None:
    chat = event(
        "1",
        "chat.message",
        "2026-11-01T00:00:00Z",
        "wecom",
        {"im_id": "wx"},
        {"conversation_id": "conv-1", "direction": "inbound", "employee_id": "e"},
    )
    call = event(
        "2",
        "call.segment",
        "2026-11-01T00:00:00Z",
        "hotline",
        {"phone": "1"},
        {"call_id": "call-9", "seq": 1, "speaker": "customer", "text": "hi"},
    )
    channel = event(
        "3",
        "channel.event",
        "2026-11-01T00:00:00Z",
        "app",
        {"phone": "+86 138", "account_no": "A"},
        {"action": "login"},
    )
    edit = event(
        "4",
        "profile.edited",
        "2026-11-01T00:00:00Z",
        "crm",
        {"email": "X@Y.com"},
        {"editor_id": "e"},
    )
    assert routed(chat) == ("p.chat", b"conv-1")
    assert routed(call) == ("p.calls", b"call-9")
    assert routed(channel) == ("p.channel-events", b"phone:86138")
    assert routed(edit) == ("p.commands", b"email:x@y.com")


def test_unroutable_lines_are_refused_unless_a_topic_is_given() -> None:
    with pytest.raises(Unroutable):
        route(SETTINGS, b"{nope")
    with pytest.raises(Unroutable):
        route(SETTINGS, b'{"type": "order.shipped"}')
    record = route(SETTINGS, b"{nope", topic="chat")
    assert (record.topic, record.key, record.value) == ("p.chat", None, b"{nope")


def test_jsonl_lines_skip_blanks_and_strip_line_ends() -> None:
    assert list(jsonl_lines([b"a\r\n", b"\n", b"  \n", b"b"])) == [b"a", b"b"]


def test_erasure_command_validates_and_goes_to_commands() -> None:
    from portrait.events import INPUT_EVENT_ADAPTER, CustomerErasure
    from streams.produce import erasure_event

    line = erasure_event("phone", "+86 138 0000 0000", "dpo@example.com")
    event = INPUT_EVENT_ADAPTER.validate_json(line)
    assert isinstance(event, CustomerErasure)
    assert event.customer.pairs() == [("phone", "+86 138 0000 0000")]
    record = route(SETTINGS, line)
    assert (record.topic, record.key) == ("p.commands", b"phone:+8613800000000")
