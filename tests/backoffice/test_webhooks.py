"""Inbound webhooks: signatures, malformed bodies, replays, reordering, unmatched events."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client as HttpClient
from django.test import override_settings

from backoffice.models import WebhookEvent
from integrations.changenow.nudge import sign_nudge
from integrations.nowpayments.ipn import sign_ipn
from payouts.models import Accumulation
from tests.factories import BatchFactory, ClientFactory

pytestmark = pytest.mark.django_db
IPN_SECRET = "test-ipn-secret"
NUDGE_SECRET = "test-changenow-webhook-secret"
NP_URL = "/webhooks/nowpayments/"
CN_URL = "/webhooks/changenow/"


def ipn(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "payment_id": 5077125051,
        "payment_status": "finished",
        "pay_address": "0xd1cDE08A07cD25adEbEd35c3867a59228C09B606",
        "price_amount": Decimal("12.59"),
        "price_currency": "usd",
        "pay_amount": Decimal("0.0042"),
        "actually_paid": Decimal("0.0042"),
        "pay_currency": "eth",
        "order_id": "acme:INV-1001",
        "order_description": "Order #1001",
        "outcome_amount": Decimal("0.0041"),
        "outcome_currency": "eth",
    }
    payload.update(overrides)
    return payload


def post_ipn(payload: dict[str, Any], secret: str = IPN_SECRET):  # noqa: ANN201
    body, signature = sign_ipn(payload, secret)
    return HttpClient().post(
        NP_URL, data=body, content_type="application/json", HTTP_X_NOWPAYMENTS_SIG=signature
    )


@pytest.fixture
def acme() -> None:
    ClientFactory(reference="acme")


def test_a_finished_payment_is_credited_once(acme: None) -> None:
    response = post_ipn(ipn())
    assert response.status_code == 200 and response.json()["status"] == "applied"
    acc = Accumulation.objects.get()
    assert (acc.payment_id, acc.eth, acc.usd) == ("5077125051", Decimal("0.0041"), Decimal("12.59"))
    assert acc.order_id == "acme:INV-1001"
    event = WebhookEvent.objects.get()
    assert (event.outcome, event.accumulation_id, event.signature_valid) == (
        "applied",
        acc.pk,
        True,
    )
    assert json.loads(event.body)["payment_id"] == 5077125051
    assert response["X-Request-Id"] == event.request_id


def test_a_replay_is_harmless(acme: None) -> None:
    first, again = post_ipn(ipn()), post_ipn(ipn())
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json()["status"] == "duplicate"
    assert Accumulation.objects.count() == 1
    assert WebhookEvent.objects.count() == 1


def test_reordered_statuses_change_nothing_after_the_credit(acme: None) -> None:
    post_ipn(ipn())
    for status in ("confirming", "waiting", "partially_paid"):
        response = post_ipn(ipn(payment_status=status))
        assert response.json()["status"] == "ignored"
    acc = Accumulation.objects.get()
    assert acc.state == "pending" and acc.eth == Decimal("0.0041")


def test_a_finished_repeat_with_other_amounts_is_stored_for_finance(acme: None) -> None:
    post_ipn(ipn())
    response = post_ipn(ipn(outcome_amount=Decimal("0.9")))
    assert response.status_code == 200 and response.json()["status"] == "unmatched"
    assert Accumulation.objects.get().eth == Decimal("0.0041")
    assert "credited as" in WebhookEvent.objects.get(outcome="unmatched").reason


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"order_id": "nobody:INV-1"}, "unknown_client"),
        ({"outcome_currency": "usdttrc20"}, "outcome_currency"),
        ({"price_currency": "eur"}, "price_currency"),
        ({"outcome_amount": Decimal("0")}, "invalid_amount"),
        ({"outcome_amount": Decimal("-1")}, "invalid_amount"),
        ({"outcome_amount": "NaN"}, "invalid_amount"),
        ({"outcome_amount": Decimal("5000000")}, "invalid_amount"),
        ({"order_id": ""}, "client reference"),
    ],
)
def test_what_cannot_be_credited_is_kept_as_unmatched(
    acme: None, overrides: dict[str, Any], reason: str
) -> None:
    response = post_ipn(ipn(**overrides))
    assert response.status_code == 200 and response.json()["status"] == "unmatched"
    assert not Accumulation.objects.exists()
    event = WebhookEvent.objects.get()
    assert event.outcome == "unmatched" and reason in event.reason


def test_a_bad_signature_is_refused_and_recorded(acme: None) -> None:
    response = post_ipn(ipn(), secret="wrong-secret")
    assert response.status_code == 401
    assert not Accumulation.objects.exists()
    event = WebhookEvent.objects.get()
    assert (event.outcome, event.signature_valid) == ("rejected", False)


def test_a_missing_signature_is_refused(acme: None) -> None:
    body, _sig = sign_ipn(ipn(), IPN_SECRET)
    response = HttpClient().post(NP_URL, data=body, content_type="application/json")
    assert response.status_code == 401
    assert not Accumulation.objects.exists()


def test_a_tampered_body_is_refused(acme: None) -> None:
    body, signature = sign_ipn(ipn(), IPN_SECRET)
    tampered = body.replace(b"0.0041", b"4.0041")
    response = HttpClient().post(
        NP_URL, data=tampered, content_type="application/json", HTTP_X_NOWPAYMENTS_SIG=signature
    )
    assert response.status_code == 401
    assert not Accumulation.objects.exists()


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b""])
def test_a_malformed_body_is_answered_400(acme: None, body: bytes) -> None:
    import hashlib
    import hmac

    signature = hmac.new(IPN_SECRET.encode(), body, hashlib.sha512).hexdigest()
    response = HttpClient().post(
        NP_URL, data=body, content_type="application/json", HTTP_X_NOWPAYMENTS_SIG=signature
    )
    assert response.status_code == 400
    assert not Accumulation.objects.exists()


def test_a_signed_body_without_payment_id_is_malformed(acme: None) -> None:
    payload = ipn()
    del payload["payment_id"]
    assert post_ipn(payload).status_code == 400
    assert not Accumulation.objects.exists()


def test_an_oversized_body_is_answered_413(acme: None) -> None:
    payload = ipn(order_description="x" * 70_000)
    assert post_ipn(payload).status_code == 413
    assert not WebhookEvent.objects.exists()


@override_settings(NOWPAYMENTS_IPN_SECRET="")
def test_nothing_is_accepted_without_a_configured_secret(acme: None) -> None:
    body, signature = sign_ipn(ipn(), "any-secret-an-attacker-guesses")
    response = HttpClient().post(
        NP_URL, data=body, content_type="application/json", HTTP_X_NOWPAYMENTS_SIG=signature
    )
    assert response.status_code == 401


def nudge(body: bytes, secret: str = NUDGE_SECRET, timestamp: int | None = None):  # noqa: ANN201
    header = sign_nudge(body, secret, timestamp=timestamp)
    return HttpClient().post(
        CN_URL, data=body, content_type="application/json", HTTP_X_SIGNATURE=header
    )


def test_a_valid_nudge_for_a_known_exchange_is_accepted(acme: None) -> None:
    from payouts.models import ExchangeAttempt

    batch = BatchFactory(state="exchange_created")
    ExchangeAttempt.objects.create(
        batch=batch,
        exchange_id=batch.exchange_id,
        from_currency="eth",
        to_currency="usdt",
        amount_from=batch.eth_total,
    )
    response = nudge(json.dumps({"id": batch.exchange_id}).encode())
    assert response.status_code == 200 and response.json()["status"] == "nudged"
    batch.refresh_from_db()
    assert batch.state == "exchange_created"  # a nudge never moves state by itself


def test_a_nudge_for_an_unknown_exchange_is_recorded(acme: None) -> None:
    response = nudge(b'{"id": "no-such-exchange"}')
    assert response.status_code == 200 and response.json()["status"] == "unknown_exchange"
    assert WebhookEvent.objects.get().outcome == "unknown_exchange"


def test_a_nudge_with_a_bad_or_stale_signature_is_refused(acme: None) -> None:
    import time

    assert nudge(b'{"id": "x"}', secret="wrong").status_code == 401
    assert nudge(b'{"id": "x"}', timestamp=int(time.time()) - 3600).status_code == 401
    response = HttpClient().post(
        CN_URL, data=b'{"id": "x"}', content_type="application/json", HTTP_X_SIGNATURE="garbage"
    )
    assert response.status_code == 401


def test_a_nudge_without_an_id_is_malformed(acme: None) -> None:
    assert nudge(b'{"exchange": 1}').status_code == 400
