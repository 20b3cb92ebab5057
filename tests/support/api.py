"""Talking to the HTTP API as a client would: tokens, requests, a Server-Sent Events reader."""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.support.envelopes import event

TOKENS = {
    "svc-token-1": ("crm", "service"),
    "sup-token-1": ("lead", "supervisor"),
    "li-token-1": ("li", "agent:agent-li"),
    "wang-token-1": ("wang", "agent:agent-wang"),
}


def write_tokens(
    path: Path, extra: dict[str, tuple[str, str]] | None = None, leave_out: str = ""
) -> Path:
    """A ``PORTRAIT_API_TOKENS_FILE`` with :data:`TOKENS` (and ``extra``, without
    ``leave_out``), hashed; written whole to a new file, then renamed over the old one."""
    listed = [
        {"subject": s, "scope": scope, "token_sha256": hashlib.sha256(t.encode()).hexdigest()}
        for t, (s, scope) in (TOKENS | (extra or {})).items()
        if t != leave_out
    ]
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps(listed))
    partial.replace(path)
    return path


def get(port: int, path: str, token: str | None = None) -> tuple[int, Any]:
    """Status and decoded JSON of a GET."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")
    except urllib.error.URLError:  # not listening (yet)
        return 0, None


@dataclass
class SseReader:
    """Reads an SSE stream on a thread: ``events`` holds (id, data, arrival monotonic)."""

    port: int
    path: str
    token: str
    last_event_id: str | None = None
    events: list[tuple[str, dict[str, Any], float]] = field(default_factory=list)
    status: int | None = None
    _connection: http.client.HTTPConnection | None = None

    def start(self) -> SseReader:
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 10
        while self.status is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def _read(self) -> None:
        self._connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream"}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        self._connection.request("GET", self.path, headers=headers)
        answer = self._connection.getresponse()
        self.status = answer.status
        if answer.status != 200:
            return
        event_id, data = "", ""
        try:
            for raw in answer:
                line = raw.decode().rstrip("\n")
                if line.startswith("id: "):
                    event_id = line[4:]
                elif line.startswith("data: "):
                    data = line[6:]
                elif line == "" and data:
                    self.events.append((event_id, json.loads(data), time.monotonic()))
                    event_id, data = "", ""
        except (OSError, ValueError, AttributeError):
            pass  # closed by close() (http.client drops its file mid-read)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()

    def ids(self) -> list[str]:
        return [event_id for event_id, _, _ in self.events]


# --- the API story: a connected, a friend, a far and a merged customer ------------------


def ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).isoformat()


def live_call(call_id: str, customer: dict[str, Any], texts: list[str]) -> list[dict[str, Any]]:
    """A call by agent-li that started a minute ago, one customer turn per text."""
    started = {"call_id": call_id, "agent_id": "agent-li"}
    events = [event(f"{call_id}-s", "call.started", ago(60), "hotline", customer, started)]
    for seq, text in enumerate(texts, start=1):
        turn = {
            "call_id": call_id,
            "seq": seq,
            "speaker": "customer",
            "text": text,
            "offset_ms": (10 + 100 * seq) * 1000,
        }
        events.append(event(f"{call_id}-{seq}", "call.segment", ago(50), "hotline", customer, turn))
    return events


A = {"phone": "13700000001"}
STORY: list[dict[str, Any]] = [
    event(
        "api-1",
        "channel.event",
        ago(3600),
        "app",
        {**A, "account_no": "ACC-7"},
        {"action": "page_view", "attributes": {"name": "李雷", "role": "holder"}},
    ),
    event(  # B is agent-wang's WeCom friend
        "api-2",
        "relation.changed",
        ago(3600),
        "wecom",
        {"im_id": "wx-b"},
        {"employee_id": "agent-wang", "relation": "friend", "action": "added"},
    ),
    event(  # C chatted with agent-li two days ago: outside the 24-hour window
        "api-3",
        "chat.message",
        ago(48 * 3600),
        "wecom",
        {"email": "c@corp.cn"},
        {
            "conversation_id": "cv-c",
            "direction": "inbound",
            "employee_id": "agent-li",
            "text": "在吗",
        },
    ),
    event("api-4", "channel.event", ago(3000), "web", {"im_id": "wx-d"}, {"action": "page_view"}),
    event(  # D's im id and A's phone: a merge
        "api-5", "channel.event", ago(2000), "web", {**A, "im_id": "wx-d"}, {"action": "login"}
    ),
]
