"""The API as an attacker meets it, through ``portrait serve``: every route and spelling of
an id against every scope, separator tricks, headers, stream floods, token guessing,
revocation without restart, and the page's sign-in (sessions, cross-site forms)."""

from __future__ import annotations

import http.client
import re
import socket
from pathlib import Path

import orjson
import pytest

from cli.stack import free_port
from portrait.config import Settings
from processors.identity import customer_id_for
from streams.kafka import ensure_topics
from streams.produce import route
from streams.records import InputRecord
from streams.testing import ListSink
from tests.support.api import SseReader, write_tokens
from tests.support.envelopes import event
from tests.support.pipeline import RunBatch
from tests.support.worker import serving as serve
from tests.support.worker import wait_for

pytestmark = pytest.mark.integration

PHONE, TEAM_PHONE = {"phone": "13911112222"}, {"phone": "13933334444"}
AGO = "2026-12-07T08:00:00+08:00"
EVENTS = [
    # an account-only call answered by agent ag_1: it connects ag_1 to the account, never
    # to the account's document
    event(
        "h-1",
        "call.started",
        AGO,
        "hotline",
        {"account_no": "ACC-9"},
        {"call_id": "k1", "agent_id": "ag_1"},
    ),
    event(
        "h-2", "channel.event", AGO, "app", {**PHONE, "account_no": "ACC-9"}, {"action": "login"}
    ),
    # a friend of employee "ag_1:team-b": not of agent ag_1
    event(
        "h-3",
        "relation.changed",
        AGO,
        "wecom",
        TEAM_PHONE,
        {"employee_id": "ag_1:team-b", "relation": "group", "action": "added", "group_id": "g"},
    ),
    event(
        "h-4",
        "relation.changed",
        AGO,
        "wecom",
        PHONE,
        {"employee_id": "ag_2", "relation": "friend", "action": "added"},
    ),
]


def _records(settings: Settings) -> list[InputRecord]:
    out = []
    for offset, item in enumerate(EVENTS):
        routed = route(settings, orjson.dumps(item))
        out.append(InputRecord(routed.topic, 0, offset, routed.key, routed.value, 1.0))
    return out


class Client:
    """Plain HTTP/1.1, headers and cookies as a browser or a script would send them."""

    def __init__(self, port: int) -> None:
        self.port = port

    def request(
        self, method: str, path: str, token: str | None = None, **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        body = headers.pop("body", None)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        sent = {k.replace("_", "-"): v for k, v in headers.items()}
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if body is not None:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        connection.request(method, path, body=body, headers=sent)
        answer = connection.getresponse()
        found = {k.lower(): v for k, v in answer.getheaders()}
        cookies = [v for k, v in answer.getheaders() if k.lower() == "set-cookie"]
        found["set-cookie"] = "\n".join(cookies)
        data = answer.read()
        connection.close()
        return answer.status, found, data

    def status(self, path: str, token: str | None = None, **headers: str) -> int:
        return self.request("GET", path, token, **headers)[0]


def _cookie(headers: dict[str, str], name: str) -> str:
    found = re.search(rf"{name}=([^;]+)", headers["set-cookie"])
    assert found, f"no {name} cookie"
    return found.group(1)


def test_every_route_and_spelling_keeps_agents_to_their_customers(
    stack_settings: Settings, tmp_path: Path, run_batch: RunBatch
) -> None:
    tokens = write_tokens(tmp_path / "tokens.json", extra={"ag1-token": ("a1", "agent:ag_1")})
    settings = stack_settings.model_copy(
        update={
            "api_tokens_file": tokens,
            "api_tokens_check_seconds": 0.2,
            "api_max_streams_per_token": 2,
            "api_auth_failures": 4,
        }
    )
    ensure_topics(settings)  # a worker would have made them: serve reads the prompts topic
    run_batch(settings, _records(settings), ListSink())
    port = free_port()
    client = Client(port)
    person = customer_id_for("phone:+8613911112222")
    team = customer_id_for("phone:+8613933334444")
    with serve(settings, port, tmp_path / "serve.log"):
        wait_for(lambda: _up(client), what="portrait serve")
        # a service reads the person; the agent of the account-only call reads nothing
        assert client.status(f"/v1/profiles/{person}", "svc-token-1") == 200
        spellings = [
            "acct:ACC-9",
            "acct%3AACC-9",
            "ACCT:ACC-9",
            f"%20{person}",
            f"{person}%20",
            person.upper(),
            f"{person}%00",
            "c-" + "0" * 19,
            "..%2F..%2Fetc",
        ]
        for spelling in spellings:
            for route_path in (f"/v1/profiles/{spelling}", f"/v1/profiles/{spelling}/problems"):
                for token in ("ag1-token", "svc-token-1"):
                    assert client.status(route_path, token) == 400, (route_path, token)
        assert client.status("/v1/accounts/ACC-9", "ag1-token") == 403
        assert client.status("/v1/accounts/ACC-9", "svc-token-1") == 200
        assert client.status("/v1/profiles?account_no=ACC-9", "ag1-token") == 403
        assert client.status(f"/v1/profiles/{person}", "ag1-token") == 403
        # the relation of employee "ag_1:team-b" connects nobody called ag_1
        assert client.status(f"/v1/profiles/{team}", "ag1-token") == 403
        assert client.status(f"/v1/profiles/{team}", "svc-token-1") == 200
        # a well-formed id that exists nowhere: 404 to a service, 403 to an agent
        missing = "c-" + "0" * 20
        assert client.status(f"/v1/profiles/{missing}", "svc-token-1") == 404
        assert client.status(f"/v1/profiles/{missing}", "ag1-token") == 403
        for bad_agent in ("ag_1%3Ateam-b", "a%20b", "x" * 200):
            assert client.status(f"/v1/agents/{bad_agent}/current", "sup-token-1") == 400
        assert client.status("/v1/profiles?phone=" + "1" * 300, "svc-token-1") == 400

        # headers on every answer, errors too
        for path, token in (
            (f"/v1/profiles/{person}", "svc-token-1"),
            (f"/v1/profiles/{person}", None),
            ("/agent/ag_1", None),
        ):
            _, headers, _ = client.request("GET", path, token)
            policy = headers["content-security-policy"]
            assert "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "same-origin"
            assert headers["cache-control"] == "no-store"

        # streams: two per token, the third refused with Retry-After; another token opens
        readers = [
            SseReader(port, "/v1/agents/ag_1/prompts", "ag1-token").start() for _ in range(2)
        ]
        assert [r.status for r in readers] == [200, 200]
        status, headers, _ = client.request("GET", "/v1/agents/ag_1/prompts", "ag1-token")
        assert status == 429 and int(headers["retry-after"]) >= 1
        watcher = SseReader(port, "/v1/agents/ag_1/prompts", "sup-token-1").start()
        assert watcher.status == 200
        for reader in (*readers, watcher):
            reader.close()

        # revocation without a restart: the file changes, the token stops working
        write_tokens(tokens, extra={"ag1-token": ("a1", "agent:ag_1")}, leave_out="svc-token-1")
        wait_for(lambda: client.status(f"/v1/profiles/{person}", "svc-token-1") == 401)
        assert client.status(f"/v1/profiles/{person}", "sup-token-1") == 200


def test_the_page_signs_in_with_a_session_and_guessing_is_slowed(
    stack_settings: Settings, tmp_path: Path
) -> None:
    tokens = write_tokens(tmp_path / "tokens.json")
    settings = stack_settings.model_copy(
        update={
            "api_tokens_file": tokens,
            "api_tokens_check_seconds": 0.2,
            "api_auth_failures": 3,
            "api_request_timeout_seconds": 1.0,
        }
    )
    ensure_topics(settings)
    port = free_port()
    client = Client(port)
    with serve(settings, port, tmp_path / "serve.log"):
        wait_for(lambda: _up(client), what="portrait serve")
        status, headers, page = client.request("GET", "/agent/agent-li")
        assert status == 401
        csrf = _cookie(headers, "portrait_csrf")
        assert f'value="{csrf}"' in page.decode()
        form = f"agent=agent-li&token=li-token-1&csrf={csrf}"
        # no form value, another site's form, a value without its cookie: refused
        for cookie, body, origin in (
            (f"portrait_csrf={csrf}", "agent=agent-li&token=li-token-1", None),
            (f"portrait_csrf={csrf}", form, "https://evil.example"),
            ("", form, None),
        ):
            extra = {"Origin": origin} if origin else {}
            answer = client.request("POST", "/agent/login", Cookie=cookie, body=body, **extra)
            assert answer[0] == 403
        status, headers, _ = client.request(
            "POST",
            "/agent/login",
            Cookie=f"portrait_csrf={csrf}",
            body=form,
            Origin=f"http://127.0.0.1:{port}",
        )
        assert status == 303
        session = _cookie(headers, "portrait_session")
        assert "li-token-1" not in headers["set-cookie"] and len(session) >= 40
        assert "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
        cookie = f"portrait_session={session}"
        assert client.status("/v1/agents/agent-li/current", Cookie=cookie) in (200, 404)
        assert client.status("/agent/agent-li", Cookie=cookie) == 200
        assert client.status("/agent/agent-wang", Cookie=cookie) == 403
        assert client.status("/v1/agents/agent-li/current", Cookie="portrait_session=forged") == 401
        # revoking the token ends its sessions
        write_tokens(tokens, leave_out="li-token-1")
        wait_for(lambda: client.status("/agent/agent-li", Cookie=cookie) == 401)

        # three unknown tokens in a minute (the forged and revoked sessions above count
        # too): then even a right one waits
        guesses = [client.status("/v1/agents/agent-li/current", f"g{n}") for n in range(5)]
        assert guesses.count(401) <= 3 and guesses[-1] == 429

        # a client that sends half a request and waits is let go (slowloris)
        with socket.create_connection(("127.0.0.1", port), timeout=60) as slow:
            slow.sendall(b"GET /v1/openapi.json HTTP/1.1\r\nHost: x\r\n")
            assert slow.recv(1024) == b""  # closed by the server, no answer
        status, headers, _ = client.request("GET", "/v1/agents/agent-wang/current", "wang-token-1")
        assert status == 429 and 1 <= int(headers["retry-after"]) <= 60


def _up(client: Client) -> bool:
    try:
        return client.status("/readyz") == 200
    except OSError:
        return False
