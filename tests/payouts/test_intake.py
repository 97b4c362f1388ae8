"""Crediting payments: idempotency and every kind of bad input."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.db import connection

from payouts.models import Accumulation, AuditEvent
from payouts.services import (
    DuplicateConflictError,
    IntakeError,
    InvalidAmountError,
    UnknownClientError,
    accumulation_record,
    runtime_settings_get,
    runtime_settings_update,
)
from payouts.transitions import Actor
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("tests")


def record(**overrides: object):  # noqa: ANN201
    args: dict[str, object] = {
        "client_reference": "acme",
        "payment_id": "4511",
        "eth": "0.0041",
        "usd": "12.59",
        "actor": ACTOR,
    }
    args.update(overrides)
    return accumulation_record(**args)  # type: ignore[arg-type]


def test_it_credits_a_payment_with_the_fee_in_force() -> None:
    ClientFactory(reference="acme")
    result = record()
    acc = result.accumulation
    assert result.created
    assert (acc.eth, acc.usd, acc.state) == (Decimal("0.0041"), Decimal("12.59"), "pending")
    assert acc.fee_percent == runtime_settings_get().platform_fee_percent
    assert AuditEvent.objects.filter(kind="credited", object_id=str(acc.pk)).count() == 1


def test_it_snapshots_the_clients_fee_override() -> None:
    ClientFactory(reference="acme", fee_percent=Decimal("1.25"))
    assert record().accumulation.fee_percent == Decimal("1.25")


def test_a_fee_change_does_not_touch_rows_already_credited() -> None:
    ClientFactory(reference="acme")
    first = record(payment_id="1").accumulation
    runtime_settings_update(
        changes={"platform_fee_percent": Decimal("5")}, actor=ACTOR, reason="pricing"
    )
    second = record(payment_id="2").accumulation
    first.refresh_from_db()
    assert (first.fee_percent, second.fee_percent) == (Decimal("3"), Decimal("5"))


def test_a_repeated_payment_returns_the_existing_row_and_changes_nothing() -> None:
    ClientFactory(reference="acme")
    first = record()
    again = record()
    assert not again.created
    assert again.accumulation.pk == first.accumulation.pk
    assert Accumulation.objects.count() == 1
    assert AuditEvent.objects.filter(kind="credited").count() == 1


def test_it_flags_a_repeat_with_different_facts_for_a_human() -> None:
    ClientFactory(reference="acme")
    record()
    with pytest.raises(DuplicateConflictError):
        record(eth="0.5")
    assert Accumulation.objects.get().eth == Decimal("0.0041")


def test_it_rejects_an_unknown_client() -> None:
    with pytest.raises(UnknownClientError):
        record(client_reference="nobody")
    assert not Accumulation.objects.exists()


@pytest.mark.parametrize("reference", ["ac\x00me", "acme\ud800"])
def test_it_rejects_text_that_postgresql_cannot_hold(reference: str) -> None:
    ClientFactory(reference="acme")
    with pytest.raises(IntakeError):
        record(client_reference=reference)
    with pytest.raises(IntakeError):
        record(order_id=f"{reference}:1")
    assert not Accumulation.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("eth", "0"),
        ("eth", "-0.1"),
        ("eth", "NaN"),
        ("eth", "sNaN"),
        ("eth", "Infinity"),
        ("eth", "-Infinity"),
        ("eth", "abc"),
        ("eth", ""),
        ("eth", 0.1),
        ("eth", None),
        ("eth", True),
        ("eth", "10001"),
        ("eth", "0.0000000000000000001"),
        ("usd", "0"),
        ("usd", "-5"),
        ("usd", "NaN"),
        ("usd", "1e12"),
        # Decimal() takes all of these; a plain ASCII decimal is the only text accepted.
        ("eth", "1_000"),
        ("eth", "0.00_41"),
        ("eth", "\u0660.\u0664"),  # Arabic-Indic digits
        ("eth", "\u00a00.0041"),  # no-break space
        ("eth", " 0.0041"),
        ("eth", "0.0041 "),
        ("eth", "0.0041\n"),
        ("eth", "+0.0041"),
        ("eth", ".5"),
        ("eth", "5."),
        ("eth", "4.1e-3"),
        ("eth", "0x10"),
        ("eth", Decimal("1e-999999999")),
        ("eth", Decimal("1e999999999")),
        ("eth", 10**60),
        ("eth", [1]),
        ("eth", {"a": 1}),
    ],
)
def test_it_rejects_a_bad_amount_and_writes_nothing(field: str, value: object) -> None:
    ClientFactory(reference="acme")
    with pytest.raises(InvalidAmountError):
        record(**{field: value})
    assert not Accumulation.objects.exists()
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize(
    ("field", "value", "stored"),
    [
        ("eth", Decimal("1e-7"), Decimal("1e-7")),  # a JSON number as NOWPayments writes it
        ("eth", Decimal("0.10000000000000000000"), Decimal("0.1")),
        ("eth", "0.000000000000000001", Decimal("1e-18")),
        ("usd", 13, Decimal("13")),
        ("usd", "12.59", Decimal("12.59")),
    ],
)
def test_it_accepts_json_numbers_and_plain_decimal_strings(
    field: str, value: object, stored: Decimal
) -> None:
    ClientFactory(reference="acme")
    acc = record(**{field: value}).accumulation
    acc.refresh_from_db()
    assert getattr(acc, field) == stored


def test_it_credits_in_one_statement() -> None:
    from django.test.utils import CaptureQueriesContext

    ClientFactory(reference="acme")
    with CaptureQueriesContext(connection) as queries:
        result = record()
    assert result.created and len(queries.captured_queries) == 1
    acc = Accumulation.objects.get()
    assert (acc.pk, acc.client.reference, acc.fee_percent) == (
        result.accumulation.pk,
        "acme",
        result.accumulation.fee_percent,
    )
    assert AuditEvent.objects.get(kind="credited").data == {
        "payment_id": "4511",
        "eth": "0.0041",
        "usd": "12.59",
    }


@pytest.mark.parametrize(
    "payment_id", ["", "   ", "x" * 65, " 4511", "45 11", "45\x0011", "\u0664", True, None, 4.5]
)
def test_it_rejects_a_bad_payment_id(payment_id: str) -> None:
    ClientFactory(reference="acme")
    with pytest.raises(IntakeError):
        record(payment_id=payment_id)
    assert not Accumulation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_deliveries_of_one_payment_credit_it_once() -> None:
    ClientFactory(reference="acme")
    barrier = threading.Barrier(4)
    outcomes: list[bool] = []
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            barrier.wait()
            outcomes.append(record().created)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(outcomes) == [False, False, False, True]
    assert Accumulation.objects.count() == 1
