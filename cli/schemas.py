"""JSON Schemas of every event type, generated from the models in :mod:`portrait.events`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from portrait.events import (
    INPUT_MODELS,
    INPUT_TOPIC_BY_TYPE,
    OUTPUT_MODELS,
    OUTPUT_TOPIC_BY_TYPE,
    AccountDocument,
    ProfileDocument,
)

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def generated_schemas() -> dict[str, dict[str, Any]]:
    """File name (relative to ``schemas/``) → JSON Schema, for every event type."""
    out: dict[str, dict[str, Any]] = {}
    for name, input_model in INPUT_MODELS.items():
        out[f"input/{name}.json"] = input_model.model_json_schema()
    for name, output_model in OUTPUT_MODELS.items():
        out[f"output/{name}.json"] = output_model.model_json_schema()
    out["profile.json"] = ProfileDocument.model_json_schema()
    out["account.json"] = AccountDocument.model_json_schema()
    for name, schema in out.items():
        schema["$id"] = f"https://portrait.dev/schemas/{name}"
    out[ASYNCAPI_FILE] = asyncapi_document()
    from api.routes import openapi_json  # the HTTP API's routes live above this layer

    out[OPENAPI_FILE] = openapi_json()
    return out


# The compacted profiles topic and each topic's record key.
DOCUMENT_TOPIC_BY_TYPE = {"profile": "profiles", "account": "profiles"}
"""The compacted profiles topic: whole documents (``profile.json``, ``account.json``) and
tombstones (a null value: merged away or erased)."""
TOPIC_KEYS = {
    "chat": "conversation id",
    "calls": "call id",
    "channel-events": "any customer identifier",
    "commands": "a customer identifier",
    "profile-changes": "customer id (account number for account.changed)",
    "agent-prompts": "agent or employee id",
    "trends": "window start",
    "dlq": "the original record's key",
    "profiles": "customer id (account number for an account); a null value is a tombstone",
}
ASYNCAPI_FILE = "asyncapi.json"
OPENAPI_FILE = "openapi.json"


def _message_name(event_type: str) -> str:
    return event_type.replace(".", "_")


def _message(event_type: str, is_input: bool) -> dict[str, Any]:
    folder = "input" if is_input else "output"
    schema = (
        f"{event_type}.json"
        if event_type in DOCUMENT_TOPIC_BY_TYPE
        else f"{folder}/{event_type}.json"
    )
    return {
        "name": event_type,
        "contentType": "application/json",
        "payload": {
            "schemaFormat": "application/schema+json;version=draft-07",
            "schema": {"$ref": schema},
        },
    }


def asyncapi_document(prefix: str = "portrait.") -> dict[str, Any]:
    """An AsyncAPI 3.0 document: every topic a channel, every event type a message whose
    payload is the committed JSON Schema; Portrait receives the inputs and sends the
    outputs."""
    by_topic: dict[str, list[str]] = {}
    for event_type, topic in INPUT_TOPIC_BY_TYPE.items():
        by_topic.setdefault(topic, []).append(event_type)
    for event_type, topic in [*OUTPUT_TOPIC_BY_TYPE.items(), *DOCUMENT_TOPIC_BY_TYPE.items()]:
        by_topic.setdefault(topic, []).append(event_type)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for topic, event_types in by_topic.items():
        channel_id = topic.replace("-", "_")
        is_input = event_types[0] in INPUT_TOPIC_BY_TYPE
        channels[channel_id] = {
            "address": f"{prefix}{topic}",
            "description": f"Record key: {TOPIC_KEYS[topic]}.",
            "messages": {
                _message_name(t): {"$ref": f"#/components/messages/{_message_name(t)}"}
                for t in event_types
            },
        }
        operations[f"{'receive' if is_input else 'send'}_{channel_id}"] = {
            "action": "receive" if is_input else "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [
                {"$ref": f"#/channels/{channel_id}/messages/{_message_name(t)}"}
                for t in event_types
            ],
        }
        for event_type in event_types:
            messages[_message_name(event_type)] = _message(event_type, is_input)
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Portrait",
            "version": "0.1.0",
            "description": "Real-time customer profiles from chat, call and channel events "
            "(topic names use the default prefix; PORTRAIT_TOPIC_PREFIX changes it).",
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "PORTRAIT_KAFKA_BOOTSTRAP",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages},
    }


def render(schema: dict[str, Any]) -> bytes:
    """Stable, readable JSON for a committed schema file."""
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file; returns the paths written."""
    written = []
    for name, schema in generated_schemas().items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(render(schema))
        written.append(path)
    return written


def stale_schemas(directory: Path = SCHEMA_DIR) -> list[str]:
    """Schema files that are missing or differ from what the models generate."""
    return [
        name
        for name, schema in generated_schemas().items()
        if not (directory / name).exists() or (directory / name).read_bytes() != render(schema)
    ]
