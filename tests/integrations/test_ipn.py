"""NOWPayments IPN signatures. Expected HMACs are computed here with hashlib over strings
written out by hand, so the canonical form is checked, not just self-consistency."""

from __future__ import annotations

import hashlib
import hmac
import time
from decimal import Decimal

import pytest

from integrations.errors import InvalidSignature, MalformedPayload
from integrations.nowpayments.ipn import (
    DEFAULT_LIMITS,
    JsonLimits,
    canonical_json,
    check_limits,
    ipn_payment_id,
    ipn_status,
    sign_ipn,
    verify_ipn,
)

SECRET = "ipn-secret-1234"


def _sig(text: str, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), text.encode("utf-8"), hashlib.sha512).hexdigest()


SORTED = (
    '{"actually_paid":0.10000000,"order_id":"acme:42","outcome_amount":1e-7,'
    '"outcome_currency":"eth","payment_id":5077125051,"payment_status":"finished",'
    '"price_amount":20,"price_currency":"usd"}'
)
UNSORTED = (
    '{"payment_id": 5077125051, "payment_status": "finished", "price_amount": 20,\n'
    ' "price_currency": "usd", "order_id": "acme:42", "outcome_amount": 1e-7,\n'
    ' "outcome_currency": "eth", "actually_paid": 0.10000000}'
)


def test_it_accepts_a_signature_over_the_raw_body() -> None:
    payload = verify_ipn(SORTED.encode(), _sig(SORTED), SECRET)
    assert payload["payment_status"] == "finished"
    assert payload["payment_id"] == 5077125051


def test_it_accepts_reordered_keys_and_whitespace_via_the_canonical_form() -> None:
    assert canonical_json(UNSORTED) == SORTED
    payload = verify_ipn(UNSORTED.encode(), _sig(SORTED), SECRET)
    assert payload["order_id"] == "acme:42"


def test_it_keeps_numbers_exactly_as_sent() -> None:
    payload = verify_ipn(UNSORTED, _sig(SORTED), SECRET)
    assert payload["outcome_amount"] == Decimal("1e-7")
    assert str(payload["actually_paid"]) == "0.10000000"  # trailing zeros kept
    assert isinstance(payload["actually_paid"], Decimal)
    # Re-serialising through float would have printed 1e-07 / 0.1: the signature would fail.
    assert '"outcome_amount":1e-7' in canonical_json(UNSORTED)


def test_it_rejects_a_tampered_body() -> None:
    tampered = SORTED.replace('"price_amount":20', '"price_amount":2000')
    with pytest.raises(InvalidSignature):
        verify_ipn(tampered, _sig(SORTED), SECRET)


def test_it_rejects_a_changed_number_representation_that_changes_the_value() -> None:
    tampered = SORTED.replace("1e-7", "1e-6")
    with pytest.raises(InvalidSignature):
        verify_ipn(tampered, _sig(SORTED), SECRET)


def test_it_rejects_the_wrong_secret() -> None:
    with pytest.raises(InvalidSignature):
        verify_ipn(SORTED, _sig(SORTED, "another-secret"), SECRET)


@pytest.mark.parametrize("signature", [None, "", "zz" * 64, "ab" * 10, "a" * 127])
def test_it_rejects_missing_or_malformed_signature_headers(signature: str | None) -> None:
    with pytest.raises(InvalidSignature):
        verify_ipn(SORTED, signature, SECRET)


def test_it_accepts_an_upper_case_hex_signature() -> None:
    assert verify_ipn(SORTED, _sig(SORTED).upper(), SECRET)["price_currency"] == "usd"


def test_it_refuses_to_verify_with_an_empty_secret() -> None:
    with pytest.raises(InvalidSignature, match="not configured"):
        verify_ipn(SORTED, _sig(SORTED, ""), "")


def test_it_sorts_nested_objects_and_keeps_array_order() -> None:
    body = (
        '{"z":1,"fee":{"withdrawalFee":0,"currency":"eth","depositFee":0.001},'
        '"list":[{"b":1,"a":2},3]}'
    )
    expected = (
        '{"fee":{"currency":"eth","depositFee":0.001,"withdrawalFee":0},'
        '"list":[{"a":2,"b":1},3],"z":1}'
    )
    assert canonical_json(body) == expected
    payload = verify_ipn(body, _sig(expected), SECRET)
    assert payload["fee"]["depositFee"] == Decimal("0.001")


def test_it_accepts_non_ascii_raw_as_javascript_signs_it() -> None:
    body = '{"order_description":"Café ☕ 日本","order_id":"acme:1"}'
    payload = verify_ipn(body.encode("utf-8"), _sig(body), SECRET)
    assert payload["order_description"] == "Café ☕ 日本"


def test_it_accepts_non_ascii_escaped_as_the_php_and_python_examples_sign_it() -> None:
    body = '{"order_id":"acme:1","order_description":"Café ☕"}'
    escaped = '{"order_description":"Caf\\u00e9 \\u2615","order_id":"acme:1"}'
    assert verify_ipn(body, _sig(escaped), SECRET)["order_description"] == "Café ☕"


def test_it_rejects_non_ascii_that_was_changed() -> None:
    body = '{"order_description":"Café","order_id":"acme:1"}'
    with pytest.raises(InvalidSignature):
        verify_ipn(body.replace("é", "e"), _sig(body), SECRET)


def test_it_sorts_keys_by_utf16_code_units_like_javascript() -> None:
    # U+1F600 is a surrogate pair (D83D DE00), which JavaScript sorts before U+E000.
    body = '{"\ue000":1,"\U0001f600":2}'
    assert canonical_json(body) == '{"\U0001f600":2,"\ue000":1}'


def _raw_sig(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha512).hexdigest()


MALFORMED = [
    b"",
    b"   ",
    b"not json",
    b"[1,2]",
    b'"text"',
    b'{"a":1,"a":2}',
    b"\xff\xfe",
    b'{"a":NaN}',
    b'{"a":"\x00"}',
    b'{"payment_id":1}\x00',
]


@pytest.mark.parametrize("body", MALFORMED)
def test_it_rejects_signed_malformed_bodies_distinctly_from_bad_signatures(body: bytes) -> None:
    with pytest.raises(MalformedPayload):
        verify_ipn(body, _raw_sig(body), SECRET)


@pytest.mark.parametrize("body", MALFORMED)
def test_it_answers_a_malformed_body_without_a_valid_signature_as_unsigned(body: bytes) -> None:
    with pytest.raises(InvalidSignature):
        verify_ipn(body, "ab" * 64, SECRET)


LIMITS = JsonLimits(max_bytes=2000, max_depth=8, max_number_chars=20, max_string_chars=50)
OVER_LIMITS = [
    ('{"a":"' + "x" * 2000 + '"}', "bytes"),
    ('{"a":' + "[" * 9 + "]" * 9 + "}", "nesting"),
    ('{"a":' + "1" * 21 + "}", "number"),
    ('{"a":"' + "x" * 51 + '"}', "string"),
]


@pytest.mark.parametrize(("text", "limit"), OVER_LIMITS)
def test_it_refuses_a_signed_body_over_a_limit_with_the_reason(text: str, limit: str) -> None:
    body = text.encode()
    with pytest.raises(MalformedPayload, match=limit):
        verify_ipn(body, _raw_sig(body), SECRET, limits=LIMITS)


@pytest.mark.parametrize(("text", "limit"), OVER_LIMITS)
def test_a_body_over_a_limit_is_never_parsed_to_check_a_signature(text: str, limit: str) -> None:
    # Signed in canonical form but sent otherwise: verifying would need a parse, which a
    # body over the limits never gets.
    body = (" " + text).encode()
    with pytest.raises(InvalidSignature):
        verify_ipn(body, _raw_sig(text.encode()), SECRET, limits=LIMITS)


def test_it_refuses_thirty_thousand_brackets_with_a_fake_signature_quickly() -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidSignature):
        verify_ipn(b"[" * 30_000, "ab" * 64, SECRET)
    with pytest.raises(MalformedPayload, match="nesting"):
        verify_ipn(b"[" * 30_000, _raw_sig(b"[" * 30_000), SECRET)
    assert time.perf_counter() - started < 1


def test_it_refuses_an_integer_of_thousands_of_digits() -> None:
    body = b'{"payment_id":' + b"7" * 4400 + b"}"
    with pytest.raises(MalformedPayload, match="number"):
        verify_ipn(body, _raw_sig(body), SECRET)


def test_the_limit_scan_stays_linear_on_unterminated_strings() -> None:
    started = time.perf_counter()
    with pytest.raises(MalformedPayload):
        check_limits('\\"' * 30_000, DEFAULT_LIMITS)
    check_limits('"\\"' * 20_000, JsonLimits(max_string_chars=10**6))
    assert time.perf_counter() - started < 1


def test_it_verifies_nul_and_lone_surrogate_escapes_in_either_canonical_form() -> None:
    sorted_text = '{"order_description":"a\\u0000b\\ud800","payment_id":5}'
    body = b'{"payment_id": 5, "order_description": "a\\u0000b\\ud800"}'
    payload = verify_ipn(body, _sig(sorted_text), SECRET)
    assert payload["order_description"] == "a\x00b\ud800"
    _, signature = sign_ipn(body, SECRET)
    assert signature == _sig(sorted_text)


@pytest.mark.parametrize(
    ("value", "expected"), [(5077125051, "5077125051"), ("5077125051", "5077125051"), (0, "0")]
)
def test_it_reads_a_payment_id_given_as_an_integer_or_digits(value: object, expected: str) -> None:
    assert ipn_payment_id(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1},
        [1],
        True,
        False,
        None,
        -1,
        "",
        "1_000",
        "12 ",
        " 12",
        "\u0661\u0662",
        "1.5",
        "\x00",
        "\ud800",
        "1e3",
        "9" * 65,
        1.5,
    ],
)
def test_it_refuses_any_other_payment_id(value: object) -> None:
    with pytest.raises(MalformedPayload, match="payment_id"):
        ipn_payment_id(value)


def test_it_reads_a_payment_status_word_and_refuses_anything_else() -> None:
    assert ipn_status("Finished") == "finished"
    assert ipn_status("partially_paid") == "partially_paid"
    for value in (None, 1, "", "fin ished", "finished\x00", "\u0661", "x" * 33, ["finished"]):
        with pytest.raises(MalformedPayload, match="payment_status"):
            ipn_status(value)


def test_sign_ipn_produces_what_verify_accepts() -> None:
    payload = {
        "payment_id": 1,
        "outcome_amount": Decimal("0.00012345"),
        "payment_status": "finished",
        "fee": {"depositFee": Decimal("0"), "currency": "eth"},
    }
    body, signature = sign_ipn(payload, SECRET)
    assert body.decode().startswith('{"fee":{"currency":"eth","depositFee":0}')
    assert verify_ipn(body, signature, SECRET)["outcome_amount"] == Decimal("0.00012345")
    raw_body, raw_signature = sign_ipn(UNSORTED, SECRET)
    assert raw_body == UNSORTED.encode() and raw_signature == _sig(SORTED)
    with pytest.raises(TypeError):
        sign_ipn({"amount": 0.1}, SECRET)
