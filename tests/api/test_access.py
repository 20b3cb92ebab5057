"""Tokens, scopes and an agent's connections, without servers; the OpenAPI document."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from api.access import Principal, Tokens, bearer
from api.http import ENDPOINTS
from api.openapi import openapi_document
from portrait.config import ConfigurationError
from portrait.schemas import SCHEMA_DIR
from processors.relationships import interaction_fields, is_connected, relation_fields


def _tokens(tmp_path: Path, entries: list[dict[str, str]]) -> Tokens:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps(entries))
    return Tokens.load(path)


def _entry(token: str, scope: str, subject: str = "s") -> dict[str, str]:
    return {
        "subject": subject,
        "scope": scope,
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
    }


def test_a_listed_token_names_its_principal_and_nothing_else_does(tmp_path: Path) -> None:
    tokens = _tokens(tmp_path, [_entry("t-svc", "service", "crm"), _entry("t-li", "agent:li")])
    assert tokens.authenticate("t-svc") == Principal("crm", "service")
    assert tokens.authenticate("t-li") == Principal("s", "agent:li")
    for wrong in ("", None, "t-sv", "t-svc ", "T-SVC", hashlib.sha256(b"t-svc").hexdigest()):
        assert tokens.authenticate(wrong) is None
    assert Tokens.load(None).authenticate("t-svc") is None  # no file: nobody


@pytest.mark.parametrize(
    "entry",
    [
        {"subject": "x", "scope": "admin", "token_sha256": "00" * 32},
        {"subject": "x", "scope": "agent:", "token_sha256": "00" * 32},
        {"subject": "x", "scope": "service", "token_sha256": "abc"},
        {"subject": "x", "scope": "service"},
    ],
)
def test_a_bad_tokens_file_is_refused_at_start(tmp_path: Path, entry: dict[str, str]) -> None:
    with pytest.raises(ConfigurationError):
        _tokens(tmp_path, [entry])


def test_bearer_headers() -> None:
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None and bearer("Bearer ") is None and bearer(None) is None


def test_scopes() -> None:
    agent, service, supervisor = (
        Principal("a", "agent:li"),
        Principal("b", "service"),
        Principal("c", "supervisor"),
    )
    assert agent.agent_id == "li" and service.agent_id is None
    assert agent.may_read_prompts("li") and not agent.may_read_prompts("wang")
    assert supervisor.may_read_prompts("wang") and not service.may_read_prompts("li")
    assert service.may_read_accounts and not agent.may_read_accounts


def test_an_agent_is_connected_by_a_live_relation_or_a_recent_contact() -> None:
    since = 1_700_000_000_000
    friend = relation_fields("li", "friend", "added", None, 5, "e1")
    removed = relation_fields("li", "friend", "removed", None, 5, "e2")
    group = relation_fields("li", "group", "added", "g-1", 5, "e3")
    recent = {
        k: v for k, v in interaction_fields("li", 1.0, since + 1).items() if k.startswith("r:")
    }
    old = {k: v for k, v in interaction_fields("li", 1.0, since - 1).items() if k.startswith("r:")}
    assert is_connected({str(k): str(v) for k, v in friend.items()}, "li", since)
    assert is_connected({str(k): str(v) for k, v in group.items()}, "li", since)
    assert is_connected({str(k): str(v) for k, v in recent.items()}, "li", since)
    assert not is_connected({str(k): str(v) for k, v in removed.items()}, "li", since)
    assert not is_connected({str(k): str(v) for k, v in old.items()}, "li", since)
    assert not is_connected({str(k): str(v) for k, v in friend.items()}, "wang", since)
    assert not is_connected({}, "li", since)


def test_the_openapi_document_is_valid_committed_and_names_every_route() -> None:
    document = openapi_document()
    validate(document)  # OpenAPI 3.1
    assert json.loads((SCHEMA_DIR / "openapi.json").read_text()) == document
    assert {e.path for e in ENDPOINTS} == set(document["paths"])
    profile = document["paths"]["/v1/profiles/{customer_id}"]["get"]
    assert set(profile["responses"]) == {"200", "401", "403", "404"}
    assert profile["security"] == [{"bearer": []}]
