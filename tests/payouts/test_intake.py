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
    ],
)
def test_it_rejects_a_bad_amount_and_writes_nothing(field: str, value: object) -> None:
    ClientFactory(reference="acme")
    with pytest.raises(InvalidAmountError):
        record(**{field: value})
    assert not Accumulation.objects.exists()
    assert not AuditEvent.objects.exists()


@pytest.mark.parametrize("payment_id", ["", "   ", "x" * 65])
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
