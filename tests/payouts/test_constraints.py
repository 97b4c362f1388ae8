"""The database itself refuses rows that break the money rules."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from payouts.models import Accumulation, RuntimeSettings
from tests.factories import AccumulationFactory, BatchFactory, ClientFactory, PayoutFactory

pytestmark = pytest.mark.django_db


def refused(fn) -> None:  # noqa: ANN001
    with pytest.raises(IntegrityError), transaction.atomic():
        fn()


@pytest.mark.parametrize(
    "fields",
    [
        {"eth": Decimal(0)},
        {"eth": Decimal("-1")},
        {"usd": Decimal(0)},
        {"fee_percent": Decimal("100.5")},
        {"fee_percent": Decimal("-1")},
        {"state": "teleported"},
        {"state": "converted"},  # no batch, no usdt
        {"usdt": Decimal("1")},  # pending with a share
    ],
)
def test_it_refuses_an_invalid_accumulation(fields: dict) -> None:
    refused(lambda: AccumulationFactory(**fields))


def test_a_payment_id_is_credited_once() -> None:
    AccumulationFactory(payment_id="77")
    refused(lambda: AccumulationFactory(payment_id="77"))


def test_converted_needs_a_batch_and_a_share() -> None:
    batch = BatchFactory()
    refused(lambda: AccumulationFactory(state="converted", batch=batch))
    acc = AccumulationFactory(state="converted", batch=batch, usdt=Decimal("1"))
    assert acc.pk


def test_paying_needs_a_payout() -> None:
    batch = BatchFactory()
    refused(lambda: AccumulationFactory(state="paying", batch=batch, usdt=Decimal(1)))


def test_money_links_are_protected() -> None:
    acc = AccumulationFactory()
    with pytest.raises(Exception, match="protected"), transaction.atomic():
        acc.client.delete()
    assert Accumulation.objects.filter(pk=acc.pk).exists()


@pytest.mark.parametrize(
    "fields",
    [
        {"payout_strategy": "instant", "payout_threshold_usd": Decimal(5)},
        {"payout_strategy": "threshold", "payout_threshold_usd": Decimal(0)},
        {"reference": "a:b"},
        {"payout_address": ""},
    ],
)
def test_it_refuses_an_inconsistent_client(fields: dict) -> None:
    refused(lambda: ClientFactory(**fields))


def test_orders_need_rows_and_positive_amounts() -> None:
    refused(lambda: BatchFactory(row_count=0))
    refused(lambda: BatchFactory(eth_total=Decimal(0)))
    refused(lambda: PayoutFactory(usdt_amount=Decimal(0)))
    refused(lambda: BatchFactory(state="completed"))  # no amounts received


def test_an_exchange_created_order_has_its_payin_address() -> None:
    refused(lambda: BatchFactory(state="exchange_created", payin_address=""))


def test_run_time_settings_are_a_singleton_with_sane_values() -> None:
    RuntimeSettings.objects.create(pk=1)
    refused(lambda: RuntimeSettings.objects.create(pk=2))
    refused(lambda: RuntimeSettings.objects.filter(pk=1).update(conversion_threshold_usd=0))
