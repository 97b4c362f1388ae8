"""factory-boy factories for the domain models."""

from __future__ import annotations

from decimal import Decimal

import factory
from django.utils import timezone

from batches.models import ConversionBatch
from payouts.models import Accumulation, Client, Payout

EIP55_ADDRESS = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


class ClientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Client

    reference = factory.Sequence(lambda n: f"merchant-{n:04d}")
    name = factory.Sequence(lambda n: f"Merchant {n}")
    payout_strategy = Client.Strategy.THRESHOLD
    payout_threshold_usd = Decimal("50")
    payout_currency = "usdt"
    payout_network = "eth"
    payout_address = EIP55_ADDRESS

    class Params:
        instant = factory.Trait(payout_strategy=Client.Strategy.INSTANT, payout_threshold_usd=0)


class AccumulationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Accumulation

    client = factory.SubFactory(ClientFactory)
    payment_id = factory.Sequence(lambda n: str(5_000_000_000 + n))
    eth = Decimal("0.01")
    usd = Decimal("30")
    fee_percent = Decimal("3")


class BatchFactory(factory.django.DjangoModelFactory):
    """A batch row in any state, for transition and constraint tests (no rows attached)."""

    class Meta:
        model = ConversionBatch

    row_count = 1
    eth_total = Decimal("0.01")
    usd_total = Decimal("30")
    threshold_usd = Decimal("20")
    trigger = ConversionBatch.Trigger.THRESHOLD
    exchange_id = factory.Sequence(lambda n: f"cnex{n:012d}")
    payin_address = EIP55_ADDRESS


class PayoutFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Payout

    client = factory.SubFactory(ClientFactory)
    row_count = 1
    usdt_amount = Decimal("29.1")
    currency = "usdt"
    network = "eth"
    address = EIP55_ADDRESS
    exchange_id = factory.Sequence(lambda n: f"cnpx{n:012d}")
    payin_address = EIP55_ADDRESS


def order_in_state(factory_cls: type[factory.django.DjangoModelFactory], state: str):  # noqa: ANN201
    """An order already in `state`, with the fields that state requires."""
    extra: dict[str, object] = {"state": state}
    if state == "completed":
        extra["completed_at"] = timezone.now()
        if factory_cls is BatchFactory:
            extra.update(
                usdt_received=Decimal("29"),
                usdt_received_raw=Decimal("29"),
                platform_usdt=Decimal("0.87"),
                exchange_dust=Decimal(0),
            )
    return factory_cls(**extra)
