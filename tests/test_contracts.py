"""The published contracts stay in step with the code: schemas, README configuration."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from cli.schemas import SCHEMA_DIR, generated_schemas, stale_schemas
from portrait.config import Settings
from portrait.events import INPUT_MODELS, OUTPUT_MODELS

ROOT = Path(__file__).resolve().parent.parent


def test_committed_schemas_match_the_event_models() -> None:
    assert stale_schemas() == [], "run `portrait schemas` and commit the result"


def test_there_is_a_schema_for_every_event_type() -> None:
    names = set(generated_schemas())
    assert {f"input/{t}.json" for t in INPUT_MODELS} <= names
    assert {f"output/{t}.json" for t in OUTPUT_MODELS} <= names
    chat = orjson.loads((SCHEMA_DIR / "input/chat.message.json").read_bytes())
    assert {"event_id", "type", "occurred_at", "source", "customer", "payload"} <= set(
        chat["required"]
    )


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    readme = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(PORTRAIT_[A-Z_]+)`", readme, flags=re.MULTILINE))
    expected = {f"PORTRAIT_{name.upper()}" for name in Settings.model_fields}
    assert documented == expected


def test_settings_come_from_portrait_variables(monkeypatch: object) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setenv("PORTRAIT_TOPIC_PREFIX", "x.")
    monkeypatch.setenv("PORTRAIT_REDIS_URL", "redis://127.0.0.1:7777/2")
    settings = Settings()
    assert settings.topic("dlq") == "x.dlq"
    assert settings.redis_port == 7777
    assert settings.effective_session_timeout == 6.0
    assert Settings(profile="production").effective_session_timeout == 45.0


def test_the_event_type_registries_agree_with_the_models_topics_lanes_and_builders() -> None:
    from portrait.events import INPUT_EVENT_ADAPTER, INPUT_TYPES, OUTPUT_TYPES
    from processors.profile import EVENT_BUILDERS
    from streams.kafka import INPUT_TOPICS, OUTPUT_TOPICS
    from streams.lanes import LANES

    mapping = INPUT_EVENT_ADAPTER.json_schema()["discriminator"]["mapping"]
    assert sorted(mapping) == sorted(INPUT_TYPES)  # the validator is made from the registry
    for name, kind in INPUT_TYPES.items():
        assert kind.model.model_fields["type"].annotation.__args__ == (name,)  # type: ignore[union-attr]
    assert {kind.topic for kind in INPUT_TYPES.values()} == set(INPUT_TOPICS)
    assert sorted(t for topics in LANES.values() for t in topics) == sorted(INPUT_TOPICS)
    assert set(EVENT_BUILDERS) <= set(INPUT_TYPES)
    assert {kind.topic for kind in OUTPUT_TYPES.values()} == set(OUTPUT_TOPICS)
    for name, kind in OUTPUT_TYPES.items():
        assert kind.model.model_fields["type"].annotation.__args__ == (name,)  # type: ignore[union-attr]
