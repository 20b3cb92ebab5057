"""The HTTP API against the real worker and ``portrait serve``: tokens and scopes, the
documents, live prompts over Server-Sent Events with resumption."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from portrait.config import Settings
from tests.support.api import STORY, A, SseReader, get, live_call, write_tokens
from tests.support.envelopes import ANGRY_ZH, HAPPY_ZH, QUESTION_ZH
from tests.support.worker import Metrics, StartWorker, produce, profile_get, serving, wait_for

pytestmark = pytest.mark.integration


def _profile_id(settings: Settings, *flags: str) -> str:
    code, document, _ = profile_get(settings, *flags)
    assert code == 0 and document is not None
    return str(document["customer_id"])


def test_tokens_scopes_documents_and_live_prompts(
    stack_settings: Settings, tmp_path: Path, worker: StartWorker
) -> None:
    settings = stack_settings.model_copy(
        update={"api_tokens_file": write_tokens(tmp_path / "tokens.json")}
    )
    port = settings.http_port
    produce(settings, STORY)
    with worker(settings, tmp_path / "worker.log"):
        wait_for(lambda: get(port, "/livez")[0] == 200 if _up(port) else False, what="the worker")
        wait_for(lambda: get(port, "/v1/profiles?im_id=wx-d", "svc-token-1")[0] == 200)
        wait_for(lambda: get(port, "/v1/profiles?email=c@corp.cn", "svc-token-1")[0] == 200)
        a = _profile_id(settings, "--phone", "13700000001")
        b = _profile_id(settings, "--im-id", "wx-b")
        c = _profile_id(settings, "--email", "c@corp.cn")

        # no token, an unknown token: 401; the OpenAPI document needs none
        assert get(port, f"/v1/profiles/{a}")[0] == 401
        assert get(port, f"/v1/profiles/{a}", "not-a-token")[0] == 401
        assert get(port, "/v1/openapi.json")[0] == 200

        # a service reads any profile: the same document as `profile get`
        code, document = get(port, f"/v1/profiles/{a}", "svc-token-1")
        _, expected, _ = profile_get(settings, "--customer-id", a)
        assert code == 200 and document == expected
        assert document["attributes"]["name"]["value"] == "李雷"
        assert [x["account_no"] for x in document["accounts"]] == ["ACC-7"]
        assert get(port, "/v1/profiles?phone=+86%20137%200000%200001", "svc-token-1")[1] == expected
        assert get(port, "/v1/profiles?account_no=ACC-7", "svc-token-1")[1] == expected
        assert get(port, "/v1/profiles/nobody-at-all", "svc-token-1")[0] == 400  # malformed
        assert get(port, f"/v1/profiles/c-{'0' * 20}", "svc-token-1")[0] == 404
        assert get(port, "/v1/profiles?phone=1&email=x@y.cn", "svc-token-1")[0] == 400
        code, account = get(port, "/v1/accounts/ACC-7", "svc-token-1")
        assert code == 200 and account["people"][0]["customer_id"] == a

        # agents: only connected customers, and the same 403 whether or not one exists
        assert get(port, f"/v1/profiles/{b}", "wang-token-1")[0] == 200  # a friend
        assert get(port, f"/v1/profiles/{a}", "wang-token-1")[0] == 403
        assert get(port, f"/v1/profiles/{c}", "li-token-1")[0] == 403  # chatted 48 h ago
        assert get(port, f"/v1/profiles/c-{'0' * 20}", "li-token-1") == (
            403,
            {"error": "forbidden"},
        )
        assert get(port, "/v1/accounts/ACC-7", "li-token-1")[0] == 403
        assert get(port, f"/v1/profiles/{a}/problems", "li-token-1")[0] == 403

        # agent-li's prompts, live: its own token and a supervisor's, never another agent's
        assert SseReader(port, "/v1/agents/agent-li/prompts", "wang-token-1").start().status == 403
        assert SseReader(port, "/v1/agents/agent-li/prompts", "svc-token-1").start().status == 403
        stream = SseReader(port, "/v1/agents/agent-li/prompts", "li-token-1").start()
        watcher = SseReader(port, "/v1/agents/agent-li/prompts", "sup-token-1").start()
        assert stream.status == 200 and watcher.status == 200
        produce(settings, live_call("call-a", A, [QUESTION_ZH, HAPPY_ZH, ANGRY_ZH]))
        wait_for(lambda: len(stream.events) >= 2, what="prompts on the stream")
        first = stream.ids()
        assert len(set(first)) == len(first)
        assert {p["customer_id"] for _, p, _ in stream.events} == {a}
        assert {p["agent_id"] for _, p, _ in stream.events} == {"agent-li"}
        # the call connects agent-li to A, and makes A its current customer
        assert get(port, f"/v1/profiles/{a}", "li-token-1")[0] == 200
        code, now = get(port, "/v1/agents/agent-li/current", "li-token-1")
        assert code == 200 and now["customer_id"] == a and now["ref"] == "call-a"
        assert get(port, "/v1/agents/agent-li/current", "wang-token-1")[0] == 403

        # a reconnect with Last-Event-ID gets what came after, once
        wait_for(lambda: len(watcher.events) >= len(first), what="the supervisor's stream")
        stream.close()
        produce(settings, live_call("call-a2", A, [HAPPY_ZH, ANGRY_ZH]))
        wait_for(lambda: len(watcher.events) > len(first), what="the second call's prompts")
        resumed = SseReader(
            port, "/v1/agents/agent-li/prompts", "li-token-1", last_event_id=first[0]
        ).start()
        wait_for(lambda: len(resumed.events) >= len(watcher.events) - 1, what="the resumption")
        time.sleep(0.5)
        assert resumed.ids() == watcher.ids()[1:]
        refused = Metrics(urllib_text(port, "/metrics")).value(
            "portrait_api_requests_total",
            code="403",
            endpoint="/v1/profiles/{customer_id}",
            lane="realtime",  # the API is served by the worker's realtime process
        )
        assert refused is not None and refused >= 1
        for reader in (resumed, watcher):
            reader.close()

    # `portrait serve` answers the same, read-only, apart from the worker
    serve_port = port + 1
    with serving(settings, serve_port, tmp_path / "serve.log"):
        wait_for(lambda: _up(serve_port) and get(serve_port, "/readyz")[0] == 200, what="serve")
        assert get(serve_port, f"/v1/profiles/{a}", "svc-token-1") == (
            200,
            expected_after(settings, a),
        )
        assert get(serve_port, f"/v1/profiles/{a}", "wang-token-1")[0] == 403
        late = SseReader(serve_port, "/v1/agents/agent-li/prompts", "sup-token-1", "none").start()
        wait_for(lambda: len(late.events) >= len(watcher.events), what="serve's prompt history")
        assert late.ids() == watcher.ids()
        late.close()
    logs = (tmp_path / "worker.log").read_text() + (tmp_path / "serve.log").read_text()
    for secret in ("li-token-1", "svc-token-1", "13700000001", "李雷", "c@corp.cn"):
        assert secret not in logs


def expected_after(settings: Settings, customer_id: str) -> dict[str, Any]:
    _, document, _ = profile_get(settings, "--customer-id", customer_id)
    assert document is not None
    return document


def urllib_text(port: int, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        return str(answer.read().decode())


def _up(port: int) -> bool:
    import socket

    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
