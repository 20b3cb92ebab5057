from pathlib import Path

import pytest

from portrait.config import DEFAULT_IDENTITY_FILE
from portrait.events import CustomerRef
from processors.identity import (
    IdentityRules,
    customer_id_for,
    identify,
    is_customer_id,
    normalise_identifier,
    split_identifier_key,
)

RULES = IdentityRules.load(DEFAULT_IDENTITY_FILE)


@pytest.mark.parametrize(
    "written", ["+86 139 1234 5678", "0086 13912345678", "13912345678", "139-1234-5678"]
)
def test_one_phone_written_several_ways_is_one_e164_number(written: str) -> None:
    assert normalise_identifier("phone", written) == "+8613912345678"


def test_the_default_region_applies_to_numbers_without_a_country_code() -> None:
    assert normalise_identifier("phone", "020 8366 1177", "GB") == "+442083661177"
    assert normalise_identifier("phone", "+1 415 555 0100") == "+14155550100"


def test_a_number_that_is_not_a_possible_phone_keeps_its_digits() -> None:
    assert normalise_identifier("phone", "1-38") == "138"


def test_emails_are_lower_case_and_trimmed() -> None:
    assert normalise_identifier("email", "  Li.Na@Example.COM ") == "li.na@example.com"


def test_account_numbers_keep_case() -> None:
    assert normalise_identifier("account_no", " Acc-01 ") == "Acc-01"


def test_accounts_are_not_person_identifiers() -> None:
    found = identify(CustomerRef(email="b@x.com", phone=["139", "138", "1-38"], account_no="A9"))
    assert found.people == ["phone:138", "phone:139", "email:b@x.com"]
    assert found.accounts == ["A9"]
    assert identify(CustomerRef(account_no=["B", "A", "B"])).people == []
    assert identify(CustomerRef(account_no=["B", "A", "B"])).accounts == ["A", "B"]


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("phone", "00000000000"),
        ("phone", "13333333333"),
        ("phone", "95598"),
        ("phone", "+86 10086"),
        ("email", "test@example.com"),
        ("email", "Someone@Mailinator.com"),
        ("email", "noreply@shop.cn"),
    ],
)
def test_blocked_values_never_identify_anyone(kind: str, value: str) -> None:
    found = identify(CustomerRef.model_validate({kind: value, "im_id": "wx1"}), RULES)
    assert found.people == ["im_id:wx1"]
    assert found.rejected == [(kind, "blocked")]


def test_ordinary_values_pass_the_default_rules() -> None:
    ref = CustomerRef(phone="+86 139 1234 5678", email="li@corp.cn", im_id="wx_li")
    found = identify(ref, RULES)
    assert found.rejected == []
    assert found.people == ["phone:+8613912345678", "im_id:wx_li", "email:li@corp.cn"]


def test_rules_file_sets_limits_and_patterns(tmp_path: Path) -> None:
    path = tmp_path / "rules.json"
    path.write_text('{"limits": {"phone": 2}, "blocked": {"im_id": ["bot-.*"]}}')
    rules = IdentityRules.load(path, "gb")
    assert rules.limits["phone"] == 2 and rules.limits["email"] == 5
    assert rules.region == "GB"
    assert identify(CustomerRef(im_id="bot-7", phone="1"), rules).rejected == [("im_id", "blocked")]


def test_customer_id_is_deterministic_and_depends_on_the_identifier() -> None:
    assert customer_id_for("phone:138") == customer_id_for("phone:138")
    assert customer_id_for("phone:138") != customer_id_for("phone:139")
    assert customer_id_for("phone:138").startswith("c-")


def test_the_same_customer_gets_the_same_id_whatever_the_order_of_identifiers() -> None:
    a = identify(CustomerRef(phone="138", im_id="wx")).people
    b = identify(CustomerRef(im_id="wx", phone="138")).people
    assert customer_id_for(a[0]) == customer_id_for(b[0])


def test_split_keeps_colons_in_values() -> None:
    assert split_identifier_key("im_id:wx:abc") == ("im_id", "wx:abc")


def test_customer_ids_are_keyed_so_an_identifier_cannot_be_tried() -> None:
    import hashlib

    plain = "c-" + hashlib.sha256(b"phone:+8613800138000").hexdigest()[:20]
    keyed = customer_id_for("phone:+8613800138000", b"k1" * 16)
    assert keyed != plain and keyed != customer_id_for("phone:+8613800138000", b"k2" * 16)
    assert keyed == customer_id_for("phone:+8613800138000", b"k1" * 16)  # replays agree
    assert is_customer_id(keyed) and is_customer_id(customer_id_for("im_id:x"))
    for spelling in ("acct:A-1", keyed.upper(), f" {keyed}", keyed + "0", "c-" + "g" * 20):
        assert not is_customer_id(spelling)
