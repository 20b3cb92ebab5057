"""The OpenAPI 3.1 document of the HTTP API, made from :data:`api.routes.ENDPOINTS` and the
document models (``schemas/openapi.json``; ``portrait schemas --check`` compares)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from portrait.events import AccountDocument, ProfileDocument

if TYPE_CHECKING:
    from api.http import Endpoint

_REF = "#/components/schemas/{model}"
_ANSWERS = {
    200: "OK",
    400: "Give exactly one identifier",
    401: "No token, or a token that is not listed",
    403: "Outside the token's scope (also when the customer does not exist)",
    404: "Not found",
    409: "Several people hold this account",
}


def _components() -> dict[str, Any]:
    """The profile and account documents (and their parts) as component schemas."""
    schemas: dict[str, Any] = {}
    for name, model in (("Profile", ProfileDocument), ("Account", AccountDocument)):
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    schemas["Problems"] = {"type": "array", "items": {"$ref": _REF.format(model="PastProblem")}}
    schemas["CurrentCustomer"] = {
        "type": "object",
        "required": ["agent_id", "customer_id", "ref", "at"],
        "properties": {
            "agent_id": {"type": "string"},
            "customer_id": {"type": "string"},
            "ref": {"type": "string", "description": "the call or conversation id"},
            "at": {"type": "string", "format": "date-time"},
        },
    }
    schemas["Error"] = {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}},
    }
    return schemas


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in re.findall(r"{(\w+)}", endpoint.path)
    ]
    parameters += [
        {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": {"type": "string"},
        }
        for name, description in endpoint.query
    ]
    responses: dict[str, Any] = {}
    for code in endpoint.answers:
        answer: dict[str, Any] = {"description": _ANSWERS[code]}
        if code == 200 and endpoint.content == "text/event-stream":
            answer["content"] = {"text/event-stream": {"schema": {"type": "string"}}}
        elif code == 200:
            schema = {"$ref": _REF.format(model=endpoint.schema)} if endpoint.schema else {}
            answer["content"] = {"application/json": {"schema": schema}}
        else:
            answer["content"] = {
                "application/json": {"schema": {"$ref": _REF.format(model="Error")}}
            }
        responses[str(code)] = answer
    operation: dict[str, Any] = {
        "operationId": endpoint.name,
        "summary": endpoint.summary,
        "parameters": parameters,
        "responses": responses,
    }
    if endpoint.path != "/v1/openapi.json":
        operation["security"] = [{"bearer": []}]
    return operation


def openapi_document(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    """The whole document of these routes (``api.routes.ENDPOINTS``)."""
    paths: dict[str, Any] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Portrait profile API",
            "version": "1",
            "description": (
                "Read-only access to customer profiles (客户画像), accounts and live agent "
                "prompts. Tokens: PORTRAIT_API_TOKENS_FILE; scopes service, supervisor, "
                "agent:<id>. The agent page is GET /agent/{agent_id}."
            ),
        },
        "servers": [{"url": "http://127.0.0.1:6066"}],
        "paths": paths,
        "components": {
            "schemas": _components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
