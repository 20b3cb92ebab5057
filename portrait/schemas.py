"""JSON Schemas of every event type, generated from the models in :mod:`portrait.events`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from portrait.events import INPUT_MODELS, OUTPUT_MODELS, ProfileDocument

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def generated_schemas() -> dict[str, dict[str, Any]]:
    """File name (relative to ``schemas/``) → JSON Schema, for every event type."""
    out: dict[str, dict[str, Any]] = {}
    for name, input_model in INPUT_MODELS.items():
        out[f"input/{name}.json"] = input_model.model_json_schema()
    for name, output_model in OUTPUT_MODELS.items():
        out[f"output/{name}.json"] = output_model.model_json_schema()
    out["profile.json"] = ProfileDocument.model_json_schema()
    for name, schema in out.items():
        schema["$id"] = f"https://portrait.dev/schemas/{name}"
    return out


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
