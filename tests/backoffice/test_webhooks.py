"""Inbound webhooks: signatures, malformed bodies, replays, reordering, unmatched events."""

from __future__ import annotations

import hashlib
import hmac
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


def post_raw(body: bytes, signature: str | None = None, url: str = NP_URL):  # noqa: ANN201
    headers = {} if signature is None else {"HTTP_X_NOWPAYMENTS_SIG": signature}
    return HttpClient().post(url, data=body, content_type="application/json", **headers)


def raw_signature(body: bytes, secret: str = IPN_SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha512).hexdigest()


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
    from backoffice.models import Alert

    post_ipn(ipn())
    for status in ("confirming", "waiting", "sending"):
        response = post_ipn(ipn(payment_status=status))
        assert response.json()["status"] == "ignored"
    acc = Accumulation.objects.get()
    assert acc.state == "pending" and acc.eth == Decimal("0.0041")
    assert not Alert.objects.exists()


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


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"", b"\xff\xfe{}"])
def test_a_signed_malformed_body_is_answered_400_and_kept_for_finance(
    acme: None, body: bytes
) -> None:
    response = post_raw(body, raw_signature(body))
    assert response.status_code == 400 and response.json()["error"]
    assert not Accumulation.objects.exists()
    event = WebhookEvent.objects.get()
    assert (event.outcome, event.signature_valid, event.body) == ("unmatched", True, body)


def test_a_malformed_body_without_a_valid_signature_is_answered_401(acme: None) -> None:
    response = post_raw(b"{not json", "ab" * 64)
    assert response.status_code == 401
    assert WebhookEvent.objects.get().outcome == "rejected"


def test_a_signed_body_without_payment_id_is_malformed(acme: None) -> None:
    payload = ipn()
    del payload["payment_id"]
    response = post_ipn(payload)
    assert response.status_code == 400 and "payment_id" in response.json()["error"]
    assert not Accumulation.objects.exists()
    assert WebhookEvent.objects.get().outcome == "unmatched"


def test_it_answers_a_signed_body_over_the_size_limit_400_and_keeps_it(acme: None) -> None:
    body, signature = sign_ipn(ipn(order_description="x" * 70_000), IPN_SECRET)
    response = post_raw(body, signature)
    assert response.status_code == 400 and "over the 65536 limit" in response.json()["error"]
    event = WebhookEvent.objects.get()
    assert (event.outcome, event.signature_valid, event.body) == ("unmatched", True, body)
    assert not Accumulation.objects.exists()


def test_it_answers_an_unsigned_body_over_the_size_limit_401(acme: None) -> None:
    body, _signature = sign_ipn(ipn(order_description="x" * 70_000), IPN_SECRET)
    response = post_raw(body, "ab" * 64)
    assert response.status_code == 401
    event = WebhookEvent.objects.get()
    assert (event.outcome, event.signature_valid) == ("rejected", False)
    assert len(event.body) == 4096 and "bytes kept" in event.reason


@override_settings(WEBHOOK_READ_MAX_BYTES=1000)
def test_it_does_not_even_read_a_body_over_the_read_limit(acme: None) -> None:
    body, signature = sign_ipn(ipn(order_description="x" * 2000), IPN_SECRET)
    assert post_raw(body, signature).status_code == 413
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


# --- strict parsing of signed input (DESIGN 12.6) ----------------------------------------


@pytest.mark.parametrize("payment_id", [{"a": 1}, [1], True, "1_000", "\u0661\u0662", "12 "])
def test_a_payment_id_that_is_not_an_integer_or_digits_is_never_credited(
    acme: None, payment_id: object
) -> None:
    response = post_ipn(ipn(payment_id=payment_id))
    assert response.status_code == 400 and "payment_id" in response.json()["error"]
    assert not Accumulation.objects.exists()
    event = WebhookEvent.objects.get()
    assert (event.outcome, event.signature_valid) == ("unmatched", True)


@pytest.mark.parametrize("amount", ["1_000", "\u0660.\u0664", "\u00a00.0041", "0.0041 ", "4e-3"])
def test_an_amount_that_is_not_a_plain_decimal_is_kept_unmatched(acme: None, amount: str) -> None:
    response = post_ipn(ipn(outcome_amount=amount))
    assert response.status_code == 200 and response.json()["status"] == "unmatched"
    assert not Accumulation.objects.exists()
    assert "invalid_amount" in WebhookEvent.objects.get().reason


@pytest.mark.parametrize("field", ["payment_id", "order_id", "order_description"])
@pytest.mark.parametrize("escape", ["\\u0000", "\\ud800", "\\udfff"])
def test_nul_and_lone_surrogates_in_signed_fields_are_stored_not_crashed_on(
    acme: None, field: str, escape: str
) -> None:
    fields = {"payment_id": "77", "order_id": "acme:INV-1", "order_description": "d"}
    fields[field] = fields[field] + escape
    body = (
        (
            '{{"order_description":"{order_description}","order_id":"{order_id}",'
            '"outcome_amount":0.0041,"outcome_currency":"eth","payment_id":"{payment_id}",'
            '"payment_status":"finished","price_amount":12.59,"price_currency":"usd"}}'
        )
        .format(**fields)
        .encode()
    )
    response = post_raw(body, raw_signature(body))
    assert response.status_code < 500
    assert WebhookEvent.objects.get().body == body
    credited = list(Accumulation.objects.values_list("payment_id", "order_id"))
    # Only a weird description leaves the payment creditable; the id and order are facts.
    assert credited == ([("77", "acme:INV-1")] if field == "order_description" else [])


def test_a_nul_byte_in_a_body_is_stored_signed_or_not(acme: None) -> None:
    body = b'{"payment_id":1,\x00"payment_status":"finished"}'
    assert post_raw(body, raw_signature(body)).status_code == 400
    assert post_raw(body + b" ", "ab" * 64).status_code == 401
    assert post_raw(body, url=CN_URL).status_code == 401
    stored = {(e.provider, e.outcome): e.body for e in WebhookEvent.objects.all()}
    assert stored == {
        ("nowpayments", "unmatched"): body,
        ("nowpayments", "rejected"): body + b" ",
        ("changenow", "rejected"): body,
    }


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"payment_id":' + b"9" * 4400 + b"}", "number"),
        (b'{"a":' + b"[" * 900 + b"]" * 900 + b"}", "nesting"),
    ],
)
def test_a_signed_body_over_a_limit_is_answered_400_with_the_reason(
    acme: None, body: bytes, reason: str
) -> None:
    response = post_raw(body, raw_signature(body))
    assert response.status_code == 400 and reason in response.json()["error"]
    assert WebhookEvent.objects.get().body == body


def test_thirty_thousand_brackets_with_a_fake_signature_are_refused_401(acme: None) -> None:
    response = post_raw(b"[" * 30_000, "ab" * 64)
    assert response.status_code == 401
    assert WebhookEvent.objects.get().outcome == "rejected"


@pytest.mark.parametrize("status", ["refunded", "partially_paid"])
def test_a_reversal_of_a_credited_payment_is_unmatched_with_an_alert_on_the_dashboard(
    acme: None, status: str, viewer: Any
) -> None:
    from backoffice.dashboard import dashboard_data
    from backoffice.models import Alert

    post_ipn(ipn())
    response = post_ipn(ipn(payment_status=status))
    assert (response.status_code, response.json()["status"]) == (200, "unmatched")
    event = WebhookEvent.objects.get(outcome="unmatched")
    assert event.reason.startswith("reversed after credit") and status in event.reason
    alert = Alert.objects.get(kind="payment_reversed")
    assert alert.status == "open" and f"/{event.pk}/" in alert.link
    assert Accumulation.objects.get().state == "pending"  # nothing is moved back by itself
    attention = dashboard_data()["attention"]
    assert (attention["unmatched"], attention["reversals"]) == (1, 1)
    browser = HttpClient()
    browser.force_login(viewer)
    listed = browser.get(attention["reversals_url"]).content.decode()
    assert f"/backoffice/webhookevent/{event.pk}/change/" in listed


def test_a_reversal_of_a_payment_never_credited_is_only_ignored(acme: None) -> None:
    from backoffice.models import Alert

    response = post_ipn(ipn(payment_status="refunded"))
    assert response.json()["status"] == "ignored"
    assert not Alert.objects.exists()


# --- one transaction per IPN --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_an_ipn_is_stored_and_credited_in_one_transaction_of_five_round_trips() -> None:
    from unittest import mock

    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    ClientFactory(reference="acme")
    post_ipn(ipn(payment_id=1))  # connection, settings row and caches warm
    with (
        CaptureQueriesContext(connection) as queries,
        mock.patch.object(connection, "commit", wraps=connection.commit) as commits,
    ):
        response = post_ipn(ipn(payment_id=2))
    assert response.json()["status"] == "applied"
    statements = [q["sql"].split()[0].upper() for q in queries.captured_queries]
    # Before: 11 (three commits: the event, the credit, the outcome update).
    assert statements == ["BEGIN", "SAVEPOINT", "WITH", "INSERT", "COMMIT"]
    assert commits.call_count == 1
    event = WebhookEvent.objects.get(payment_id="2")
    assert (event.outcome, event.accumulation_id) == (
        "applied",
        Accumulation.objects.get(payment_id="2").pk,
    )


def test_a_failed_application_is_rolled_back_and_the_event_is_still_stored(
    acme: None, caplog: pytest.LogCaptureFixture
) -> None:
    from unittest import mock

    import payouts.services

    real = payouts.services.accumulation_record

    def credit_then_fail(**kwargs: Any) -> Any:
        real(**kwargs)
        raise RuntimeError("disk on fire")

    with mock.patch.object(payouts.services, "accumulation_record", credit_then_fail):
        response = post_ipn(ipn())
    assert (response.status_code, response.json()["status"]) == (200, "unmatched")
    assert not Accumulation.objects.exists()
    event = WebhookEvent.objects.get()
    assert "could not be applied: RuntimeError: disk on fire" in event.reason
    assert "ipn application failed" in caplog.text
    # NOWPayments retries are duplicates; finance resolves the stored event.
    assert post_ipn(ipn()).json()["status"] == "duplicate"


def test_a_database_error_in_the_application_leaves_the_event_stored(acme: None) -> None:
    from unittest import mock

    from django.db import connection

    import payouts.services

    real = payouts.services.accumulation_record

    def credit_then_break_the_transaction(**kwargs: Any) -> Any:
        real(**kwargs)
        with connection.cursor() as cur:
            cur.execute("SELECT 1 / 0")  # aborts the transaction, not only the statement

    with mock.patch.object(
        payouts.services, "accumulation_record", credit_then_break_the_transaction
    ):
        response = post_ipn(ipn())
    assert (response.status_code, response.json()["status"]) == (200, "unmatched")
    assert not Accumulation.objects.exists()
    assert "DataError: division by zero" in WebhookEvent.objects.get().reason


def test_any_other_failure_in_the_view_is_a_logged_4xx_never_a_500(
    acme: None, caplog: pytest.LogCaptureFixture
) -> None:
    from unittest import mock

    with mock.patch("backoffice.webhooks.ipn_apply", side_effect=ZeroDivisionError("boom")):
        response = post_ipn(ipn())
    assert response.status_code == 422 and response.json()["status"] == "error"
    (logged,) = [r for r in caplog.records if r.getMessage() == "webhook failed"]
    assert logged.request_id == response["X-Request-Id"]  # type: ignore[attr-defined]
    assert logged.exc_info is not None and logged.exc_info[0] is ZeroDivisionError


def test_a_request_id_is_kept_only_when_it_is_a_plain_token(acme: None) -> None:
    body, signature = sign_ipn(ipn(), IPN_SECRET)
    response = HttpClient().post(
        NP_URL,
        data=body,
        content_type="application/json",
        HTTP_X_NOWPAYMENTS_SIG=signature,
        HTTP_X_REQUEST_ID="abc\x00def",
    )
    assert response.status_code == 200 and response["X-Request-Id"] != "abc\x00def"
    assert WebhookEvent.objects.get().request_id == response["X-Request-Id"]


# --- rate limits --------------------------------------------------------------------------


def throttled_to(rate: str) -> Any:
    from django.conf import settings

    rates = {"webhooks.nowpayments": rate, "webhooks.changenow": rate}
    return override_settings(
        REST_FRAMEWORK={**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    )


def test_a_flood_from_one_address_is_answered_429_with_retry_after(acme: None) -> None:
    from django.core.cache import cache

    cache.clear()
    with throttled_to("3/min"):
        answers = [post_ipn(ipn(payment_id=n)).status_code for n in range(1, 5)]
        nudged = [nudge(b'{"id": "x"}').status_code for _ in range(4)]
        other = HttpClient(REMOTE_ADDR="10.0.0.9").post(
            NP_URL, data=b"{}", content_type="application/json"
        )
        limited = post_ipn(ipn(payment_id=9))
    assert answers == [200, 200, 200, 429] and nudged == [200, 200, 200, 429]
    assert other.status_code == 401  # another address has its own allowance
    assert 0 < int(limited["Retry-After"]) <= 60
    assert Accumulation.objects.count() == 3


def test_a_forwarded_for_header_does_not_buy_a_new_allowance(acme: None) -> None:
    from django.core.cache import cache

    cache.clear()
    with throttled_to("2/min"):
        answers = [
            HttpClient(HTTP_X_FORWARDED_FOR=f"203.0.113.{n}")
            .post(CN_URL, data=b"{}", content_type="application/json")
            .status_code
            for n in range(3)
        ]
    assert answers == [401, 401, 429]


def test_an_empty_rate_means_no_limit(acme: None) -> None:
    from django.core.cache import cache

    cache.clear()
    with throttled_to(""):
        assert {nudge(b'{"id": "x"}').status_code for _ in range(30)} == {200}


# --- nudges -------------------------------------------------------------------------------


def test_fifty_replays_of_one_nudge_store_one_event_and_poll_once(acme: None) -> None:
    import time
    from unittest import mock

    from payouts.models import ExchangeAttempt

    batch = BatchFactory(state="exchange_created")
    ExchangeAttempt.objects.create(
        batch=batch,
        exchange_id=batch.exchange_id,
        from_currency="eth",
        to_currency="usdt",
        amount_from=batch.eth_total,
    )
    body = json.dumps({"id": batch.exchange_id}).encode()
    header = sign_nudge(body, NUDGE_SECRET, timestamp=int(time.time()))
    with mock.patch("payouts.engine.enqueue_advance") as polls:
        answers = [
            HttpClient()
            .post(CN_URL, data=body, content_type="application/json", HTTP_X_SIGNATURE=header)
            .json()["status"]
            for _ in range(50)
        ]
        later = nudge(body, timestamp=int(time.time()) + 1)
    assert answers == ["nudged"] + ["duplicate"] * 49
    assert later.json()["status"] == "nudged"  # a new signed nudge still polls
    assert polls.call_count == 2
    assert WebhookEvent.objects.filter(provider="changenow").count() == 2


def test_a_signed_nudge_body_that_is_not_an_id_is_kept_and_answered_400(acme: None) -> None:
    body = b"[" * 900
    response = nudge(body)
    assert response.status_code == 400 and response.json()["error"]
    event = WebhookEvent.objects.get()
    assert (event.provider, event.outcome, event.body) == ("changenow", "unmatched", body)


# --- the stored body ----------------------------------------------------------------------


def test_the_admin_shows_a_stored_body_as_text_with_invalid_bytes_escaped(
    acme: None, viewer: Any
) -> None:
    body = b'{"x":"caf\xc3\xa9 \xff",\x00"\xe2\x80\x8b"}'
    post_raw(body, raw_signature(body))
    event = WebhookEvent.objects.get()
    assert event.body == body
    assert event.body_text == '{"x":"café \\xff",\\x00"\\u200b"}'
    browser = HttpClient()
    browser.force_login(viewer)
    page = browser.get(f"/admin/backoffice/webhookevent/{event.pk}/change/").content.decode()
    assert "café \\xff" in page and "\\x00" in page


@pytest.mark.django_db(transaction=True)
def test_the_bytea_migration_keeps_bodies_stored_as_text_readable() -> None:
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    # What older code stored: text, with an undecodable byte written as a \xNN escape.
    old = '{"order_description":"café \\xff"}'
    MigrationExecutor(connection).migrate([("backoffice", "0001_initial")])
    try:
        with connection.cursor() as cur:
            cur.execute(
                "INSERT INTO backoffice_webhookevent (provider, event_id, received_at, "
                "signature_valid, outcome, reason, body, headers, request_id, payment_id, "
                "reference) VALUES ('nowpayments', 'old', now(), true, 'unmatched', '', %s, "
                "'{}', '', '', '')",
                [old],
            )
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    event = WebhookEvent.objects.get(event_id="old")
    assert event.body == old.encode()
    assert event.body_text == old
