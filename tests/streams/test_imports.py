import orjson
import pytest

from portrait.events import INPUT_EVENT_ADAPTER, SourceImported
from streams.imports import build_imports, parse_mapping

CSV = (
    "Mobile,account_no,name,city,Updated,notes\n"
    "138-0000-0001,A-1,张三,上海,2026-01-05T10:00:00+08:00,\n"
    ",,,,,orphan row without identifiers\n"
    "139 0000 0002,,Li Si,Beijing,2026-02-01T09:00:00Z,vip\n"
).encode()


def test_csv_rows_become_source_imported_with_a_mapping() -> None:
    mapping = parse_mapping(["Mobile=phone", "Updated=occurred_at", "notes=attr:remark"])
    lines, summary = build_imports(CSV, "csv", "crm", mapping, 0.8)
    assert (summary.accepted, summary.rejected) == (2, 1)
    assert summary.reasons == ["row 2: source.imported.customer: value_error"]
    first = INPUT_EVENT_ADAPTER.validate_json(lines[0])
    assert isinstance(first, SourceImported)
    assert first.customer.pairs() == [("account_no", "A-1"), ("phone", "138-0000-0001")]
    assert first.payload.attributes == {"name": "张三", "city": "上海"}
    assert first.payload.confidence == 0.8 and first.source == "crm"
    second = INPUT_EVENT_ADAPTER.validate_json(lines[1])
    assert second.payload.attributes == {"name": "Li Si", "city": "Beijing", "remark": "vip"}  # type: ignore[union-attr]


def test_the_same_file_gives_the_same_event_ids() -> None:
    mapping = parse_mapping(["Mobile=phone", "Updated=occurred_at"])
    once, _ = build_imports(CSV, "csv", "crm", mapping)
    again, _ = build_imports(CSV, "csv", "crm", mapping)
    assert [orjson.loads(x)["event_id"] for x in once] == [
        orjson.loads(x)["event_id"] for x in again
    ]


def test_jsonl_rows_envelopes_and_garbage() -> None:
    envelope = {
        "event_id": "given",
        "type": "source.imported",
        "occurred_at": "2026-01-01T00:00:00Z",
        "source": "third_party",
        "customer": {"email": "a@b.c"},
        "payload": {"attributes": {"x": 1}},
    }
    data = b"\n".join(
        [
            orjson.dumps(
                {
                    "phone": "1",
                    "occurred_at": "2026-01-01T00:00:00Z",
                    "interactions": [{"action": "complaint"}],
                    "tier": "gold",
                }
            ),
            orjson.dumps(envelope),
            b"not json",
        ]
    )
    lines, summary = build_imports(data, "jsonl", "third_party", {})
    assert (summary.accepted, summary.rejected) == (2, 1)
    first = INPUT_EVENT_ADAPTER.validate_json(lines[0])
    assert first.payload.interactions == [{"action": "complaint"}]  # type: ignore[union-attr]
    assert orjson.loads(lines[1])["event_id"] == "given"


def test_bad_mappings_are_refused() -> None:
    with pytest.raises(ValueError, match="column=target"):
        parse_mapping(["Mobile"])


def test_an_imported_rows_id_is_keyed() -> None:
    import hashlib

    mapping = {"phone": "phone"}
    data = b"phone\n13800000001\n"
    [plain], _ = build_imports(data, "csv", "crm", mapping)
    [other], _ = build_imports(data, "csv", "crm", mapping, key=b"another-key-16-bytes")
    first, second = orjson.loads(plain)["event_id"], orjson.loads(other)["event_id"]
    assert first != second  # the id depends on the key
    row = b"crm" + orjson.dumps({"phone": "13800000001"}, option=orjson.OPT_SORT_KEYS)
    assert first != "import-" + hashlib.sha256(row).hexdigest()[:32]  # not an unkeyed digest
