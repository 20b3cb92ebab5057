import math

from processors.relationships import (
    ClosenessWeights,
    connected_employees,
    interaction_fields,
    relation_fields,
    relationships,
)


def registers(*pairs: tuple[str, str]) -> dict[str, str]:
    """(field name without the "r:" prefix, action) → stored registers."""
    return {name: f"000000000000001|e\t{action}" for name, action in pairs}


def test_relation_fields_name_friend_and_hashed_group() -> None:
    [(friend, value)] = relation_fields("emp:1", "friend", "added", None, 5, "ev").items()
    assert friend == "r:friend:emp:1" and value == "000000000000005|ev\tadded"
    [group] = relation_fields("emp:1", "group", "removed", "g|x", 5, "ev")
    assert group.startswith("r:grp:emp:1:") and len(group) == len("r:grp:emp:1:") + 8
    assert interaction_fields("a", 2.5, 1_700_000_000_000) == {
        "c:msg:a": 1,
        "d:emp:a": 2.5,
        "r:met:a": "1700000000000",
    }


def test_connected_are_active_friends_and_group_members() -> None:
    group = next(iter(relation_fields("g-emp", "group", "added", "g1", 1, "x")))[2:]
    regs = registers(("friend:f-emp", "added"), ("friend:gone", "removed"), (group, "added"))
    assert connected_employees(regs) == ["f-emp", "g-emp"]


def test_friend_beats_group_beats_messages_and_removed_stops_counting() -> None:
    group = next(iter(relation_fields("grouped", "group", "added", "g1", 1, "x")))[2:]
    regs = registers(("friend:friend", "added"), ("friend:ex", "removed"), (group, "added"))
    counts = {"msg:talker": "4", "msg:ex": "4", "ch:app": "9"}
    ranked = relationships(regs, counts, {}, ClosenessWeights())
    by_id = {r["employee_id"]: r["closeness"] for r in ranked}
    assert by_id["friend"] == round(3.0 / 6.0, 4)
    assert by_id["grouped"] == round(1.0 / 4.0, 4)
    message_score = 0.5 * math.log1p(4)
    assert by_id["talker"] == by_id["ex"] == round(message_score / (message_score + 3), 4)
    assert by_id["friend"] > by_id["grouped"] > by_id["talker"]
    assert [r["employee_id"] for r in ranked] == ["friend", "grouped", "ex", "talker"]


def test_recent_interactions_break_equal_message_counts() -> None:
    counts = {"msg:old": "3", "msg:new": "3"}
    weights = {"emp:old": "1.0", "emp:new": "3.0", "ch:app": "100"}
    ranked = relationships({}, counts, weights, ClosenessWeights())
    assert [r["employee_id"] for r in ranked] == ["new", "old"]


def test_actions_are_named_by_time_and_listed_newest_first() -> None:
    from processors.relationships import action_fields, actions_towards_employees

    trail: dict[str, str] = {}
    trail.update({k[2:]: str(v) for k, v in action_fields("e1", "message", 1_000, "a").items()})
    trail.update({k[2:]: str(v) for k, v in action_fields("e2", "call", 5_000, "b").items()})
    assert actions_towards_employees(trail) == [
        {"employee_id": "e2", "action": "call", "occurred_at": "1970-01-01T00:00:05.000Z"},
        {"employee_id": "e1", "action": "message", "occurred_at": "1970-01-01T00:00:01.000Z"},
    ]
