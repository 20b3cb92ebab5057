"""``portrait.profiles`` records: each key a change names, as it is in Redis now."""

from __future__ import annotations

import orjson

from models.customer_model import default_customer_model
from portrait.config import Settings
from processors.document import DocumentSettings
from processors.profile import delta_settings
from streams.profiles import named_keys, profile_records
from tests.support.envelopes import chan, event
from tests.support.state import apply_events, profile_of, with_store


def _change(kind: str, **fields: str) -> bytes:
    return orjson.dumps({"type": kind, **fields})


def test_a_batch_names_each_key_once_in_order_and_skips_what_is_not_a_change() -> None:
    batch = [
        _change("profile.changed", customer_id="c-1"),
        _change("profile.merged", customer_id="c-1", merged_id="c-2"),
        b"not json",
        None,
        _change("account.changed", account_no="A-1", customer_id=""),
        _change("profile.changed", customer_id="c-1"),
    ]
    assert list(named_keys(batch)) == [("person", "c-1"), ("person", "c-2"), ("account", "A-1")]


def test_live_keys_get_their_documents_and_removed_ones_tombstones(
    redis_settings: Settings,
) -> None:
    deltas = delta_settings(redis_settings)
    gone = {"email": "bye@corp.cn"}
    results = apply_events(
        redis_settings,
        [
            chan("p1", "2026-11-01T09:00:00+08:00", "app", {"phone": "13500000001"}, city="上海"),
            chan("p2", "2026-11-01T10:00:00+08:00", "web", {"im_id": "wx-p"}),
            chan(
                "p3", "2026-11-02T09:00:00+08:00", "app", {"phone": "13500000001", "im_id": "wx-p"}
            ),
            chan("p4", "2026-11-02T09:00:00+08:00", "app", gone),
            event("p5", "customer.erasure", "2026-11-03T09:00:00+08:00", "crm", gone, {}),
            chan("p6", "2026-11-03T09:00:00+08:00", "app", {"account_no": "A-9"}),
        ],
        deltas,
    )
    [merged], [erased] = results[2].merged, results[4].erased
    survivor = results[2].customer_id or ""
    changes = [
        _change("profile.merged", customer_id=survivor, merged_id=merged),
        _change("profile.erased", customer_id=erased),
        _change("account.changed", account_no="A-9"),
        _change("account.changed", account_no="NO-SUCH"),
    ]
    document = DocumentSettings()
    model = default_customer_model()
    records = with_store(
        redis_settings,
        lambda store: profile_records(changes, store, model, redis_settings, document),
    )
    by_key = {r.key.decode(): r.value for r in records if r.key}
    assert {r.topic for r in records} == {redis_settings.topic("profiles")}
    assert orjson.loads(by_key[survivor] or b"") == profile_of(
        redis_settings, "phone", "13500000001", document
    )
    assert by_key[merged] is None and by_key[erased] is None and by_key["NO-SUCH"] is None
    assert orjson.loads(by_key["A-9"] or b"")["account_no"] == "A-9"
