"""Tokens, scopes and an agent's connections, without servers; the OpenAPI document."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from api.access import Principal, Tokens, bearer
from api.routes import ENDPOINTS, openapi_json
from cli.schemas import SCHEMA_DIR
from portrait.config import ConfigurationError
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
    document = openapi_json()
    validate(document)  # OpenAPI 3.1
    assert json.loads((SCHEMA_DIR / "openapi.json").read_text()) == document
    assert {e.path for e in ENDPOINTS} == set(document["paths"])
    profile = document["paths"]["/v1/profiles/{customer_id}"]["get"]
    assert set(profile["responses"]) == {"200", "401", "403", "404"}
    assert profile["security"] == [{"bearer": []}]


def test_a_connection_compares_whole_employee_ids() -> None:
    since = 1_700_000_000_000
    for relation, group in (("group", "g-1"), ("friend", None)):
        fields = relation_fields("ag_1:team-b", relation, "added", group, 5, "e1")
        registers = {str(k): str(v) for k, v in fields.items()}
        assert is_connected(registers, "ag_1:team-b", since)
        for other in ("ag_1", "ag_1:team", "ag", "ag_1:team-b:x"):
            assert not is_connected(registers, other, since), other
    met = {k: str(v) for k, v in interaction_fields("ag_1:x", 1.0, since + 1).items()}
    assert not is_connected(met, "ag_1", since)


def test_agent_scopes_name_a_whole_agent_id(tmp_path: Path) -> None:
    for scope in ("agent:ag_1:team-b", "agent:a b", "agent:a/b", "agent:" + "x" * 200):
        with pytest.raises(ConfigurationError):
            _tokens(tmp_path, [_entry("t", scope)])
    assert _tokens(tmp_path, [_entry("t", "agent:ag_1.team-b@x")]).authenticate("t")


def test_the_tokens_file_is_read_again_when_it_changes_and_fails_closed(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps([_entry("t-old", "service")]))
    tokens = Tokens.load(path, every=0.0)
    assert tokens.authenticate("t-old") is not None
    path.write_text(json.dumps([_entry("t-new", "service"), _entry("t-2", "supervisor")]))
    assert tokens.authenticate("t-old") is None  # revoked without a restart
    assert tokens.authenticate("t-new") == Principal("s", "service")
    path.write_text("[{not json")  # a broken file lets nobody in until it is fixed
    assert tokens.authenticate("t-new") is None
    path.unlink()
    assert tokens.authenticate("t-new") is None


def test_limits_refuse_past_each_bound_and_free_their_slots() -> None:
    from api.guard import Limits, Refused
    from portrait.config import Settings

    limits = Limits(Settings(api_max_streams=3, api_max_streams_per_token=2, api_auth_failures=2))
    with limits.stream("a"), limits.stream("a"):
        with pytest.raises(Refused, match="streams_per_token"), limits.stream("a"):
            pass
        with limits.stream("b"), pytest.raises(Refused, match="streams_total"), limits.stream("c"):
            pass
    with limits.stream("a"), limits.stream("a"):  # freed again
        pass
    limits.check_guessing("10.0.0.1")
    limits.failed("10.0.0.1")
    limits.failed("10.0.0.1")
    with pytest.raises(Refused) as refused:
        limits.check_guessing("10.0.0.1")
    assert refused.value.reason == "auth_failures" and 1 <= refused.value.retry_after <= 60
    limits.check_guessing("10.0.0.2")  # another address is not slowed
