"""Fuzz of both webhooks: signed and unsigned bodies, mutated fields, encodings, sizes.

Whatever arrives: no answer is a 5xx (nor the 422 of an unexpected failure), nothing is
credited that a strict reading of the signed body does not credit, and every correctly
signed body is stored byte for byte. A fixed corpus replays every case found by the fuzz of
issue 14; hypothesis adds random ones around them.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import re
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import pytest
from django.test import Client as HttpClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backoffice.models import WebhookEvent
from integrations.changenow.nudge import sign_nudge
from integrations.errors import MalformedPayload
from integrations.nowpayments.ipn import DEFAULT_LIMITS, check_limits
from payouts.models import Accumulation
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db
IPN_SECRET = "test-ipn-secret"
NUDGE_SECRET = "test-changenow-webhook-secret"
NP_URL = "/webhooks/nowpayments/"
CN_URL = "/webhooks/changenow/"
_ids = itertools.count(910_000_001)


class Raw(str):
    """JSON text put into a body as is (a number of any length, a nested structure...)."""


def dumps(value: Any) -> str:
    """JSON text of a value; `Raw` verbatim, strings ASCII-escaped (so a lone surrogate is
    a valid `\\udXXX` escape), keys in the order given."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return format(value, "f")
    return json.dumps(value)


def valid_ipn(payment_id: int) -> dict[str, Any]:
    return {
        "payment_id": payment_id,
        "payment_status": "finished",
        "price_amount": Raw("12.59"),
        "price_currency": "usd",
        "order_id": f"acme:INV-{payment_id}",
        "order_description": "Order",
        "outcome_amount": "0.0041",
        "outcome_currency": "eth",
    }


def raw_signature(body: bytes) -> str:
    return hmac.new(IPN_SECRET.encode(), body, hashlib.sha512).hexdigest()


# --- the oracle: what a strict reading of a signed IPN credits ---------------------------

_PLAIN = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def _amount(value: Any, maximum: Decimal) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        return None
    if isinstance(value, str) and not _PLAIN.fullmatch(value):
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        return None
    if not amount.is_finite() or not 0 < amount <= maximum:
        return None
    if amount != amount.quantize(Decimal("1e-18"), rounding="ROUND_DOWN"):
        return None
    return amount


def expected_credit(body: bytes) -> tuple[str, Decimal, Decimal] | None:
    """(payment id, eth, usd) when the body is one creditable IPN for client acme."""
    try:
        # Over the webhook limits nothing is credited, whatever it says: that is the policy.
        if len(body) > DEFAULT_LIMITS.max_bytes:
            return None
        check_limits(body.decode("utf-8"), DEFAULT_LIMITS)
        payload = json.loads(body, parse_float=Decimal)
    except (ValueError, RecursionError, MalformedPayload):
        return None
    if not isinstance(payload, dict):
        return None
    pid = payload.get("payment_id")
    if isinstance(pid, bool) or not (
        (isinstance(pid, int) and pid >= 0)
        or (isinstance(pid, str) and pid.isascii() and pid.isdigit())
    ):
        return None
    status = payload.get("payment_status")
    if not isinstance(status, str) or not status.isascii() or status.lower() != "finished":
        return None
    for field, expected in (("outcome_currency", "eth"), ("price_currency", "usd")):
        value = payload.get(field)
        if not isinstance(value, str) or value.lower() != expected:
            return None
    order_id = payload.get("order_id")
    if not isinstance(order_id, str) or order_id.split(":", 1)[0].strip() != "acme":
        return None
    if "\x00" in order_id or any(0xD800 <= ord(c) <= 0xDFFF for c in order_id):
        return None
    eth = _amount(payload.get("outcome_amount"), Decimal(10_000))
    usd = _amount(payload.get("price_amount"), Decimal(50_000_000))
    if eth is None or usd is None:
        return None
    return str(pid), eth, usd


# --- one delivery and its checks ---------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    body: bytes
    signature: str | None
    signed: bool  # the signature is a valid HMAC of these exact bytes


def deliver(delivery: Delivery) -> None:
    headers = {} if delivery.signature is None else {"HTTP_X_NOWPAYMENTS_SIG": delivery.signature}
    before = set(Accumulation.objects.values_list("payment_id", flat=True))
    response = HttpClient().post(
        NP_URL, data=delivery.body, content_type="application/json", **headers
    )
    assert response.status_code in {200, 400, 401}, (response.status_code, delivery)
    created = Accumulation.objects.exclude(payment_id__in=before)
    expected = expected_credit(delivery.body) if delivery.signed else None
    if expected is None or expected[0] in before:
        assert not created.exists(), delivery
    else:
        assert [(a.payment_id, a.eth, a.usd, a.client.reference) for a in created] == [
            (*expected, "acme")
        ], delivery
    if delivery.signed:
        assert response.status_code in {200, 400}
        assert WebhookEvent.objects.filter(
            provider="nowpayments", signature_valid=True, body=delivery.body
        ).exists(), delivery
    else:
        assert response.status_code == 401
        assert WebhookEvent.objects.filter(
            provider="nowpayments", signature_valid=False, body=delivery.body[:4096]
        ).exists(), delivery


def signed(body: bytes) -> Delivery:
    return Delivery(body, raw_signature(body), True)


def unsigned(body: bytes, signature: str | None = "ab" * 64) -> Delivery:
    return Delivery(body, signature, False)


def with_field(field: str, value: Any) -> bytes:
    payload = valid_ipn(next(_ids))
    payload[field] = value
    return dumps(payload).encode()


@pytest.fixture(autouse=True)
def world(settings: Any) -> None:
    ClientFactory(reference="acme")
    # The fuzz is about bodies, not rates: no throttling while it floods the endpoints.
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"webhooks.nowpayments": "", "webhooks.changenow": ""},
    }


# --- the fixed corpus ----------------------------------------------------------------------

CORPUS: list[tuple[str, Delivery]] = [
    ("nul byte, signed", signed(b'{"payment_id":1\x00}')),
    ("nul byte, unsigned", unsigned(b'{"payment_id":1\x00}')),
    ("nul byte, no signature", unsigned(b"\x00" * 10, None)),
    ("30000 brackets, fake signature", unsigned(b"[" * 30_000)),
    ("30000 brackets, signed", signed(b"[" * 30_000)),
    ("4400-digit integer payment_id", signed(with_field("payment_id", Raw("7" * 4400)))),
    ("4400-digit amount", signed(with_field("outcome_amount", Raw("1" * 4301)))),
    ("nesting 900", signed(with_field("order_description", Raw("[" * 900 + "]" * 900)))),
    ("nesting 900, unsigned", unsigned(with_field("x", Raw("{" + '"a":{' * 900 + "}" * 901)))),
    *[
        (f"{escape!r} in {field}", signed(with_field(field, f"1{escape}")))
        for field in ("payment_id", "order_id", "order_description")
        for escape in ("\x00", "\ud800", "\udfff")
    ],
    ("payment_id object", signed(with_field("payment_id", {"a": 1}))),
    ("payment_id list", signed(with_field("payment_id", [1]))),
    ("payment_id true", signed(with_field("payment_id", True))),
    ("payment_id 1_000", signed(with_field("payment_id", "1_000"))),
    ("amount 1_000", signed(with_field("outcome_amount", "1_000"))),
    ("amount Arabic-Indic", signed(with_field("outcome_amount", "\u0660.\u0664"))),
    ("amount no-break space", signed(with_field("outcome_amount", "\u00a00.0041"))),
    ("amount exponent string", signed(with_field("outcome_amount", "4.1e-3"))),
    ("amount tiny exponent", signed(with_field("outcome_amount", Raw("1e-999999999")))),
    ("amount huge exponent", signed(with_field("price_amount", Raw("1e999999999")))),
    ("amount float-like", signed(with_field("outcome_amount", Raw("0.0041")))),
    ("duplicate key", signed(b'{"payment_id":1,"payment_id":2}')),
    ("invalid UTF-8", signed(b'{"order_id":"acme:\xff"}')),
    ("oversized, signed", signed(with_field("order_description", "x" * 70_000))),
    ("oversized, unsigned", unsigned(with_field("order_description", "x" * 70_000))),
    ("empty, signed", signed(b"")),
    ("garbage signature", unsigned(with_field("x", 1), "not-a-signature")),
    ("valid", signed(dumps(valid_ipn(next(_ids))).encode())),
]


@pytest.mark.parametrize("delivery", [d for _, d in CORPUS], ids=[name for name, _ in CORPUS])
def test_it_survives_every_case_of_the_corpus(delivery: Delivery) -> None:
    deliver(delivery)


def test_the_valid_case_of_the_corpus_is_credited() -> None:
    # The oracle would accept a fuzz that credits nothing: make sure it credits this one.
    body = dumps(valid_ipn(next(_ids))).encode()
    deliver(signed(body))
    assert Accumulation.objects.count() == 1


def test_fifty_replays_of_a_nudge_are_one_event_and_answered_200() -> None:
    body = b'{"id": "fuzz-exchange-1"}'
    header = sign_nudge(body, NUDGE_SECRET, timestamp=int(time.time()))
    answers = [
        HttpClient()
        .post(CN_URL, data=body, content_type="application/json", HTTP_X_SIGNATURE=header)
        .status_code
        for _ in range(50)
    ]
    assert answers == [200] * 50
    assert WebhookEvent.objects.filter(provider="changenow").count() == 1


# --- hypothesis ----------------------------------------------------------------------------

hostile_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        ["", " ", "\x00", "\ud800", "\udfff", "\u00a0", "1_000", "\u0661", "NaN", "-0", "1e3"]
    ),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=10),
)
hostile_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**40), max_value=10**40),
    st.decimals(allow_nan=False, allow_infinity=False, places=20),
    hostile_text,
    st.builds(lambda n: Raw("9" * n), st.integers(1, 5000)),
    st.builds(lambda n: Raw("[" * n + "]" * n), st.integers(1, 1200)),
    st.builds(lambda e: Raw(f"1e{e}"), st.integers(-(10**9), 10**9)),
    st.lists(st.integers(0, 9), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
FIELDS = [
    "payment_id",
    "payment_status",
    "order_id",
    "order_description",
    "outcome_amount",
    "price_amount",
    "outcome_currency",
    "price_currency",
]


@st.composite
def ipn_bodies(draw: st.DrawFn) -> bytes:
    payload = valid_ipn(next(_ids))
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=3, unique=True)):
        payload[field] = draw(hostile_values)
    body = dumps(payload).encode()
    mutation = draw(st.sampled_from(["none", "none", "insert", "truncate", "replace"]))
    if mutation == "insert":
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.binary(min_size=1, max_size=4)) + body[at:]
    elif mutation == "truncate":
        body = body[: draw(st.integers(0, len(body)))]
    elif mutation == "replace":
        body = draw(st.binary(max_size=200))
    return body


@st.composite
def deliveries(draw: st.DrawFn) -> Delivery:
    body = draw(ipn_bodies())
    how = draw(st.sampled_from(["signed", "signed", "fake", "none", "tampered"]))
    if how == "signed":
        return signed(body)
    if how == "tampered" and body:
        # One bit of the last byte flipped: never whitespace, so never the same JSON.
        return unsigned(body[:-1] + bytes([body[-1] ^ 1]), raw_signature(body))
    return unsigned(body, None if how == "none" else draw(st.sampled_from(["ab" * 64, "x"])))


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(deliveries())
def test_no_ipn_gets_a_5xx_or_a_wrong_credit_and_every_signed_one_is_stored(
    delivery: Delivery,
) -> None:
    deliver(delivery)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.one_of(
        st.binary(max_size=600),
        st.builds(lambda s: json.dumps({"id": s}).encode(), hostile_text),
        st.just(b"[" * 30_000),
    ),
    st.booleans(),
)
def test_no_nudge_gets_a_5xx_and_every_signed_one_is_stored(body: bytes, sign: bool) -> None:
    now = int(time.time())
    header = sign_nudge(body, NUDGE_SECRET, timestamp=now) if sign else f"t={now},v1={'a' * 64}"
    response = HttpClient().post(
        CN_URL, data=body, content_type="application/json", HTTP_X_SIGNATURE=header
    )
    assert response.status_code in ({200, 400} if sign else {401}), response.content
    kept = body if sign else body[:4096]  # unsigned bodies are kept only in part
    assert WebhookEvent.objects.filter(
        provider="changenow", signature_valid=sign, body=kept
    ).exists()
