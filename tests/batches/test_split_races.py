"""The split paths attacked: two sweeps at once (two clusters) never put a row in two orders
or reserve it twice, and reconcile names a row moved between split orders."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from backoffice.reconcile import reconcile_breaches
from batches.models import ConversionBatch
from batches.services import batch_sweep
from payouts.limits import PairRange
from payouts.models import Accumulation, Payout
from payouts.payout_sweep import payout_sweep
from payouts.transitions import Actor
from tests.factories import AccumulationFactory, BatchFactory, ClientFactory

ACTOR = Actor.system("tests")
MAX_ETH = Decimal("0.01")


def at_once(work: Callable[[], Any], runs: int = 4) -> list[Any]:
    """`work` in two threads released together, `runs` times; errors are re-raised."""
    results: list[Any] = []
    errors: list[BaseException] = []
    for _ in range(runs):
        barrier = threading.Barrier(2)

        def one(barrier: threading.Barrier = barrier) -> None:
            try:
                barrier.wait()
                results.append(work())
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)
            finally:
                connection.close()

        threads = [threading.Thread(target=one) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return results


def breaches_named(prefix: str) -> list[str]:
    return [
        f"{b.object}: {b.detail}" for b in reconcile_breaches() if b.invariant.startswith(prefix)
    ]


@pytest.mark.django_db(transaction=True)
def test_two_split_sweeps_at_once_put_every_row_in_exactly_one_batch_within_range() -> None:
    client = ClientFactory()
    for _ in range(30):
        AccumulationFactory(client=client, eth=Decimal("0.0025"), usd=Decimal("7.5"))
    results = at_once(
        lambda: batch_sweep(actor=ACTOR, minimum_eth=Decimal("0.001"), maximum_eth=MAX_ETH)
    )
    made = [b for r in results for b in r.batches]
    assert sum(r.created for r in results) == 1  # the other run found the lock held or nothing
    assert {r.reason for r in results if not r.created} <= {"busy", "no_pending"}
    assert len(made) == ConversionBatch.objects.count() == 8  # 0.075 ETH: 7 x 0.01 + 0.005
    assert not Accumulation.objects.filter(state="pending").exists()
    for batch in ConversionBatch.objects.all():
        rows = Accumulation.objects.filter(batch=batch)
        assert batch.eth_total <= MAX_ETH
        assert (rows.count(), sum(r.eth for r in rows)) == (batch.row_count, batch.eth_total)
    assert breaches_named("2 batch rows") == []


@pytest.mark.django_db
def test_reconcile_names_a_row_moved_between_two_split_batches() -> None:
    client = ClientFactory()
    for _ in range(8):
        AccumulationFactory(client=client, eth=Decimal("0.0025"), usd=Decimal("7.5"))
    first, second = batch_sweep(
        actor=ACTOR, minimum_eth=Decimal("0.001"), maximum_eth=MAX_ETH
    ).batches
    assert breaches_named("2 batch rows") == []
    row = Accumulation.objects.filter(batch_id=first.batch_id).first()
    Accumulation.objects.filter(pk=row.pk).update(batch_id=second.batch_id)  # as a bug would
    named = breaches_named("2 batch rows")
    assert len(named) == 2 and any(first.batch_id in n for n in named)


def converted_client(rows: int = 6, usdt: str = "10") -> Any:
    """A client with `rows` converted shares of a completed batch, as the distribution
    leaves them."""
    client = ClientFactory(payout_currency="btc", payout_network="btc", instant=True)
    batch = BatchFactory(
        state="completed",
        completed_at=timezone.now(),
        row_count=rows,
        usdt_received=Decimal(usdt) * rows,
        usdt_received_raw=Decimal(usdt) * rows,
        platform_usdt=0,
        exchange_dust=0,
    )
    for _ in range(rows):
        AccumulationFactory(
            client=client, state="converted", batch=batch, usdt=Decimal(usdt), eth=Decimal("0.01")
        )
    return client


def split_range(_currency: str, _network: str) -> PairRange:
    return PairRange(Decimal("5"), Decimal("20"))  # two 10-USDT rows per payout


@pytest.mark.django_db(transaction=True)
def test_two_payout_sweeps_at_once_reserve_each_row_once_within_the_maximum() -> None:
    client = converted_client()
    results = at_once(lambda: payout_sweep(actor=ACTOR, range_for=split_range))
    assert sum(r.created for r in results) == 3  # 60 USDT, at most 20 per payout
    payouts = list(Payout.objects.filter(client=client))
    assert sorted(p.usdt_amount for p in payouts) == [Decimal(20)] * 3
    assert {p.split_total_usdt for p in payouts} == {Decimal(60)}
    assert Accumulation.objects.filter(client=client, state="paying").count() == 6
    assert breaches_named("3 payout rows") == []


@pytest.mark.django_db
def test_reconcile_names_a_row_moved_between_two_split_payouts() -> None:
    client = converted_client()
    assert payout_sweep(actor=ACTOR, range_for=split_range).created == 3
    first, second = Payout.objects.filter(client=client)[:2]
    row = Accumulation.objects.filter(payout=first).first()
    Accumulation.objects.filter(pk=row.pk).update(payout=second)  # as a bug would
    named = breaches_named("3 payout rows")
    assert len(named) == 2 and any(str(first.pk) in n for n in named)
