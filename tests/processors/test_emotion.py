from zoneinfo import ZoneInfo

from portrait.events import INPUT_EVENT_ADAPTER
from processors.emotion import EmotionResult, emotion_document, emotion_fields, text_to_read
from processors.profile import DeltaSettings, build_delta
from tests.support.envelopes import event

NEG = EmotionResult("negative", {"negative": 0.9, "neutral": 0.05, "positive": 0.05}, "anger", 0.8)
POS = EmotionResult("positive", {"negative": 0.1, "neutral": 0.1, "positive": 0.8}, "joy", 0.7)


def parsed(raw: dict[str, object]):  # type: ignore[no-untyped-def]
    return INPUT_EVENT_ADAPTER.validate_python(raw)


def test_only_the_customers_own_words_are_read() -> None:
    def chat(direction: str, text: str | None) -> object:
        return parsed(
            event(
                "c",
                "chat.message",
                "2026-11-01T00:00:00Z",
                "wecom",
                {"im_id": "x"},
                {"conversation_id": "c", "direction": direction, "employee_id": "e", "text": text},
            )
        )

    def segment(speaker: str) -> object:
        return parsed(
            event(
                "s",
                "call.segment",
                "2026-11-01T00:00:00Z",
                "hotline",
                {"phone": "1"},
                {"call_id": "k", "seq": 1, "speaker": speaker, "text": "怎么又停电了"},
            )
        )

    assert text_to_read(chat("inbound", "你好")) == "你好"  # type: ignore[arg-type]
    assert text_to_read(chat("outbound", "您好")) is None  # type: ignore[arg-type]
    assert text_to_read(chat("inbound", "   ")) is None  # type: ignore[arg-type]
    assert text_to_read(segment("customer")) == "怎么又停电了"  # type: ignore[arg-type]
    assert text_to_read(segment("agent")) is None  # type: ignore[arg-type]
    ugc = parsed(
        event(
            "u",
            "channel.event",
            "2026-11-01T00:00:00Z",
            "app",
            {"phone": "1"},
            {"action": "complaint", "text": "太慢了"},
        )
    )
    assert text_to_read(ugc) == "太慢了"


def test_negative_and_calm_messages_make_different_fields() -> None:
    negative = emotion_fields(NEG, 1_000, "e1", 30.0)
    calm = emotion_fields(POS, 2_000, "e2", 30.0)
    assert negative["r:emotion_last"] == "000000000001000|e1\tnegative"
    assert "n:000000000001000|e1" in negative and "r:calm" not in negative
    assert calm["r:calm"] == "000000000002000|e2" and not any(k.startswith("n:") for k in calm)
    assert calm["e:wv"] == calm["e:w"] * POS.valence  # type: ignore[operator]


def test_document_reads_the_streak_the_state_keeps() -> None:
    registers = {"emotion_last": "000000000000009|z\tnegative", "calm": "000000000000005|c"}
    sums = {"w": "2.0", "wv": "-1.0"}
    assert emotion_document(registers, sums, {"streak": "2"}) == {
        "last": "negative",
        "average": -0.5,
        "negative_streak": 2,
    }
    assert emotion_document({}, {}, {}) == {"last": None, "average": None, "negative_streak": 0}


def test_delta_carries_emotion_when_given() -> None:
    chat = parsed(
        event(
            "c9",
            "chat.message",
            "2026-11-01T00:00:00Z",
            "wecom",
            {"im_id": "x"},
            {"conversation_id": "c", "direction": "inbound", "employee_id": "e", "text": "气死了"},
        )
    )
    delta = build_delta(chat, DeltaSettings(timezone=ZoneInfo("UTC")), NEG)
    assert delta.fields["r:emotion_last"].endswith("\tnegative")  # type: ignore[union-attr]
    negatives = [name for name in delta.fields if name.startswith("n:")]
    assert len(negatives) == 1 and negatives[0][2:] == delta.fields["r:emotion_last"][:-9]
