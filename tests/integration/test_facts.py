"""Facts from chat text and a business-card image through the real worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from portrait.config import Settings
from tests.support.envelopes import event
from tests.support.images import EN_CARD, card_png
from tests.support.worker import (
    Metrics,
    StartWorker,
    http_get,
    outputs,
    produce,
    profile_get,
    wait_for,
)

pytestmark = pytest.mark.integration

# yesterday at 10:00 Shanghai time: inside the trends retention (7 days) whatever the date
_DAY = datetime.now(UTC).astimezone(ZoneInfo("Asia/Shanghai")) - timedelta(days=1)
AT = _DAY.replace(hour=10, minute=0, second=0, microsecond=0)


def chat(eid: str, im_id: str, text: str | None, images: list[str] | None = None) -> Any:
    payload = {
        "conversation_id": f"conv-{im_id}",
        "direction": "inbound",
        "employee_id": "emp-9",
        "text": text,
        "images": images or [],
    }
    return event(eid, "chat.message", AT.isoformat(), "wecom", {"im_id": im_id}, payload)


def values(doc: dict[str, Any]) -> dict[str, str]:
    return {name: a["value"] for name, a in doc["attributes"].items()}


def test_worker_reads_facts_from_text_and_a_card(
    stack_settings: Settings, tmp_path: Path, worker: StartWorker
) -> None:
    images = tmp_path / "images"
    images.mkdir()
    (images / "card.png").write_bytes(card_png(EN_CARD))
    # the trends timer waits until the three messages are in (each lane takes what it
    # has fetched, so they may be applied in separate batches); a second run emits
    settings = stack_settings.model_copy(
        update={"ocr_image_dir": images, "trends_check_seconds": 3600.0}
    )
    produce(
        settings,
        [
            chat("x1", "wx-zh", "您好，我叫陈静，在深圳腾讯科技有限公司工作，电话 139 8888 7777"),
            chat(
                "x2", "wx-en", "Hi, my name is Tom Baker, I'm based in London. Born on 2 July 1979."
            ),
            chat("x3", "wx-card", "here is my card", [str(images / "card.png"), "/etc/passwd"]),
        ],
    )
    with worker(settings, tmp_path / "worker.log"):
        wait_for(
            lambda: all(
                profile_get(settings, "--im-id", i)[0] == 0 for i in ("wx-zh", "wx-en", "wx-card")
            ),
            timeout=90,
            what="three profiles",
        )
        metrics = http_get(settings, "/metrics")[1]
    emitting = settings.model_copy(update={"trends_check_seconds": 1.0})
    with worker(emitting, tmp_path / "worker.log"):
        wait_for(lambda: bool(outputs(settings, "trends")), what="a trends.window event")
    zh = profile_get(settings, "--im-id", "wx-zh")[1]
    en = profile_get(settings, "--im-id", "wx-en")[1]
    card = profile_get(settings, "--im-id", "wx-card")[1]
    assert zh is not None and en is not None and card is not None
    assert values(zh) == {
        "name": "陈静",
        "company": "深圳腾讯科技有限公司",
        "phone": "13988887777",
        "city": "深圳",
    }
    assert values(en) == {"name": "Tom Baker", "city": "London", "birthday": "1979-07-02"}
    assert values(card) == {
        "name": "Sarah Connor",
        "company": "Cyberdyne Systems Inc",
        "phone": "14155550100",
        "email": "sarah.connor@cyberdyne.com",
    }
    assert {a["source"] for a in card["attributes"].values()} == {"ocr"}
    [dlq] = outputs(settings, "dlq")
    assert dlq["reason"] == "image_path_refused: image 1 image_path_refused"
    read = Metrics(metrics)  # chat is the realtime lane's
    assert read.value("portrait_model_inference_seconds_count", model="ocr", lane="realtime") == 1
    assert read.value("portrait_dlq_total", reason="image_path_refused", lane="realtime") == 1
    # the three messages' window (an hour of yesterday, long closed) went out once
    [window] = outputs(settings, "trends")
    start = AT.astimezone(UTC).strftime("%Y-%m-%dT%H:00:00.000Z")
    assert window["window_start"] == start
    assert window["messages"] == 3 and window["terms"]
