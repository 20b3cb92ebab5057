"""Past problems: recorded by intent, paired with the first resolution after them."""

from __future__ import annotations

from models.emotion import default_model
from processors.problems import all_problems, most_similar, problem_fields

INTENTS = ("complaint", "outage")


def test_only_problem_intents_are_recorded() -> None:
    assert problem_fields("又停电了", "outage", INTENTS, 1_000, "e1")
    assert problem_fields("怎么缴费", "payment", INTENTS, 1_000, "e2") == {}
    assert problem_fields("你好", None, INTENTS, 1_000, "e3") == {}
    [(name, stored)] = problem_fields("x" * 400, "outage", INTENTS, 1_000, "e4").items()
    assert name.startswith("r:pb:") and len(stored) < 400


def test_each_problem_takes_the_first_resolution_after_it() -> None:
    registers: dict[str, str] = {}
    for text, intent, ms, eid in [
        ("停电了", "outage", 1_000, "p1"),
        ("还是没电", "outage", 5_000, "p2"),
        ("客服态度差", "complaint", 9_000, "p3"),
    ]:
        registers.update(
            {k[2:]: v for k, v in problem_fields(text, intent, INTENTS, ms, eid).items()}
        )
    # a resolution at 3 s (call ended, fixed) and one at 6 s (feedback)
    registers["rs:000000000003000|c-end"] = (
        '000000000003000|c-end\t{"event_id": "c-end", "type": "call.ended", "outcome": "fixed"}'
    )
    registers["rs:000000000006000|fb"] = (
        '000000000006000|fb\t{"event_id": "fb", "type": "feedback.recorded", "satisfaction": 4}'
    )
    found = all_problems(registers)
    assert [p["event_id"] for p in found] == ["p3", "p2", "p1"]  # newest first
    assert found[0]["resolution"] is None
    assert found[1]["resolution"]["event_id"] == "fb"
    assert found[1]["resolution"]["satisfaction"] == 4
    assert found[2]["resolution"]["outcome"] == "fixed"
    assert found[2]["at"] == "1970-01-01T00:00:01.000Z"


def test_most_similar_problems_first() -> None:
    problems = [
        {"text": "客服态度很差，挂我电话", "event_id": "a"},
        {"text": "家里停电了，什么时候来电", "event_id": "b"},
        {"text": "The bill charged me twice", "event_id": "c"},
        {"text": "整个小区都停电了", "event_id": "d"},
    ]
    ranked = most_similar(problems, "又停电了", default_model().encoder, count=3)
    assert [p["event_id"] for p in ranked[:2]] in (["b", "d"], ["d", "b"])
    assert len(ranked) == 3 and ranked[0]["similarity"] >= ranked[2]["similarity"]
    assert most_similar([], "x", default_model().encoder) == []
