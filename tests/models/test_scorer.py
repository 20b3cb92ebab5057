"""The scorer's old and new scores are those of the states before and after an update,
however it got them (remembered, the empty state's scored once, or scored now)."""

from models.customer_model import default_customer_model
from models.scorer import Scorer, score_sections
from processors.document import Update, is_new, update_of
from processors.layout import NEGATIVE_STREAK


def _fields(version: int, amount: float) -> dict[str, str]:
    return {
        "m:version": str(version),
        "m:first_seen": "1793500000000",
        "m:last_seen": "1793600000000",
        "c:events_total": str(version),
        "c:act:bill_paid": str(version),
        "e:amount": repr(amount),
        NEGATIVE_STREAK: "0",  # every answer shows the streak, a new customer's too
    }


def _new(amount: float) -> Update:
    fields = _fields(1, amount)
    was: dict[str, str | None] = {name: None for name in fields if name != NEGATIVE_STREAK}
    return update_of({"fields": fields, "ids": ["im_id:x"]}, was, ["im_id:x"])


def _next(version: int, amount: float, previous: float) -> Update:
    was: dict[str, str | None] = {
        "m:version": str(version - 1),
        "c:events_total": str(version - 1),
        "c:act:bill_paid": str(version - 1),
        "e:amount": repr(previous),
    }
    return update_of({"fields": _fields(version, amount), "ids": ["im_id:x"]}, was, [])


def test_old_scores_are_the_scores_of_the_state_before() -> None:
    model = default_customer_model()
    scorer = Scorer(model)
    first, second, older = _new(50.0), _new(150.0), _next(5, 400.0, 300.0)
    assert is_new(first) and is_new(second) and not is_new(older)
    pairs = scorer.score([("a", first), ("b", second), ("c", older)])
    for update, (old, current) in zip([first, second, older], pairs, strict=True):
        assert old == score_sections(model, [update.held("before")])[0]
        assert current == score_sections(model, [update.held("after")])[0]
    assert pairs[0][1] != pairs[1][1] and pairs[2][0] != pairs[2][1]  # the states differ
    # the next update of "c" starts from the scores remembered for its state after
    later = _next(6, 450.0, 400.0)
    [(old, _)] = scorer.score([("c", later)])
    assert old == pairs[2][1] == score_sections(model, [later.held("before")])[0]
