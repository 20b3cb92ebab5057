from portrait.events import CustomerRef
from processors.identity import (
    customer_id_for,
    identifier_keys,
    normalise_identifier,
    split_identifier_key,
)


def test_phone_numbers_keep_digits_only() -> None:
    assert normalise_identifier("phone", " +86 138-0013-8000 ") == "8613800138000"
    assert normalise_identifier("phone", "(555) 010 9999") == "5550109999"


def test_emails_are_lower_case_and_trimmed() -> None:
    assert normalise_identifier("email", "  Li.Na@Example.COM ") == "li.na@example.com"


def test_account_numbers_keep_case() -> None:
    assert normalise_identifier("account_no", " Acc-01 ") == "Acc-01"


def test_keys_are_ranked_by_kind_then_value_and_deduplicated() -> None:
    ref = CustomerRef(email="b@x.com", phone=["139", "138", "1-38"], account_no="A9")
    assert identifier_keys(ref) == ["account_no:A9", "phone:138", "phone:139", "email:b@x.com"]


def test_customer_id_is_deterministic_and_depends_on_the_identifier() -> None:
    assert customer_id_for("phone:138") == customer_id_for("phone:138")
    assert customer_id_for("phone:138") != customer_id_for("phone:139")
    assert customer_id_for("phone:138").startswith("c-")


def test_the_same_customer_gets_the_same_id_whatever_the_order_of_identifiers() -> None:
    a = identifier_keys(CustomerRef(phone="138", im_id="wx"))
    b = identifier_keys(CustomerRef(im_id="wx", phone="138"))
    assert customer_id_for(a[0]) == customer_id_for(b[0])


def test_split_keeps_colons_in_values() -> None:
    assert split_identifier_key("im_id:wx:abc") == ("im_id", "wx:abc")
