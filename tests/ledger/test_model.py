"""Property: random sequences of intake, conversions, payouts, refunds, write-offs and owner
top-ups keep every database invariant, and the ledger equals a pure-Python model of the
same sequence (computed from the amounts alone, not read back from the ledger)."""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backoffice.reconcile import reconcile_breaches
from batches.models import ConversionBatch
from batches.services import batch_distribute, batch_sweep, split_exact
from ledger.services import balances_get, ledger_post
from payouts import engine
from payouts.models import Accumulation, Payout, Transfer
from payouts.postings import WEI, transfer_post_final
from payouts.recovery import order_release_and_close
from payouts.services import payout_complete
from payouts.transitions import Actor, transition
from tests.factories import EIP55_ADDRESS, AccumulationFactory, ClientFactory

ACTOR = Actor.system("model")
PAYIN = "0x1111111111111111111111111111111111111111"
FEES = (Decimal("0"), Decimal("2.5"), Decimal("3"))
_nonce = itertools.count(1)


class Model:
    """What each account should hold, by the rules of DESIGN.md 12.2."""

    def __init__(self) -> None:
        self.books: dict[tuple[str, str], Decimal] = defaultdict(Decimal)

    def move(self, asset: str, amount: Decimal, *, into: str, out_of: str) -> None:
        # Natural sign: `into` an asset/expense grows it, `out_of` a liability/income shrinks
        # what we owe or earned; expressed per account as the figure balances_get shows.
        self.books[(into, asset)] += amount
        self.books[(out_of, asset)] -= amount

    def add(self, account: str, asset: str, amount: Decimal) -> None:
        self.books[(account, asset)] += amount

    def expected(self) -> dict[tuple[str, str], Decimal]:
        return {k: v for k, v in self.books.items() if v != 0}


def actual() -> dict[tuple[str, str], Decimal]:
    return {
        (name, asset): value
        for name, assets in balances_get().items()
        for asset, value in assets.items()
        if value != 0
    }


def deposit(batch: ConversionBatch | Payout, asset: str, amount: Decimal, gas: int) -> None:
    """The order's funding transfer, final on chain, booked as the engine books it."""
    tx_hash = "0x" + uuid.uuid4().hex * 2
    link = {"batch": batch} if isinstance(batch, ConversionBatch) else {"payout": batch}
    transfer = Transfer.objects.create(
        **link,
        asset=asset,
        amount=amount,
        to_address=PAYIN if isinstance(batch, ConversionBatch) else EIP55_ADDRESS,
        from_address="0xhost",
        chain_id=1,
        nonce=next(_nonce),
        state="mined",
        raw_tx="0x00",
        tx_hash=tx_hash,
        mined_hash=tx_hash,
        gas_fee_wei=gas,
        final_at=timezone.now(),
    )
    transfer_post_final(transfer=transfer, actor=ACTOR)


def sweep_and_fund(model: Model, gas: int, *, send: bool) -> ConversionBatch | None:
    result = batch_sweep(actor=ACTOR)
    if not result.created:
        return None
    transition(
        model=ConversionBatch,
        pk=result.batch_id,
        to_state="exchange_created",
        actor=ACTOR,
        updates={"exchange_id": f"ex{uuid.uuid4().hex[:10]}", "payin_address": PAYIN},
    )
    batch = ConversionBatch.objects.get(pk=result.batch_id)
    if send:
        transition(model=ConversionBatch, pk=batch.pk, to_state="funds_sent", actor=ACTOR)
        deposit(batch, "eth", batch.eth_total, gas)
        model.add("host_wallet", "eth", -batch.eth_total - gas * WEI)
        model.add("network_fees", "eth", gas * WEI)
    return batch


def rows_by_client(batch: ConversionBatch) -> list[tuple[str, Decimal, Decimal]]:
    return list(
        Accumulation.objects.filter(batch=batch)
        .order_by("id")
        .values_list("client__reference", "eth", "fee_percent")
    )


def op_intake(model: Model, client: int, eth: Decimal) -> None:
    AccumulationFactory(client=CLIENTS[client], eth=eth, usd=Decimal(25), fee_percent=FEES[client])
    model.add("host_wallet", "eth", eth)
    model.add(f"clients:{CLIENTS[client].reference}", "eth", eth)


def op_convert(model: Model, received: Decimal, gas: int) -> None:
    batch = sweep_and_fund(model, gas, send=True)
    if batch is None:
        return
    transition(model=ConversionBatch, pk=batch.pk, to_state="converting", actor=ACTOR)
    rows = rows_by_client(batch)
    usdt = (received * batch.usd_total).quantize(Decimal("0.000001"))
    batch_distribute(batch_id=batch.pk, amount_to=usdt, actor=ACTOR)
    shares = split_exact(
        amount_micro=int(usdt.scaleb(6)),
        rows=[(int(eth.scaleb(18)), fee) for _ref, eth, fee in rows],
    )
    model.add("host_wallet", "usdt", usdt)
    for (ref, eth, _fee), micro in zip(rows, shares, strict=True):
        model.add(f"clients:{ref}", "eth", -eth)
        model.add(f"clients:{ref}", "usdt", Decimal(micro).scaleb(-6))
    model.add("platform_fees", "usdt", usdt - Decimal(sum(shares)).scaleb(-6))


def op_payout(model: Model, client: int, gas: int) -> None:
    c = CLIENTS[client]
    rows = Accumulation.objects.filter(client=c, state="converted")
    total = sum((r.usdt for r in rows), Decimal(0))
    if not total:
        return
    payout = Payout.objects.create(
        client=c,
        row_count=rows.count(),
        usdt_amount=total,
        currency="usdt",
        network="eth",
        address=EIP55_ADDRESS,
        state="reserved",
    )
    rows.update(state="paying", payout=payout)
    transition(model=Payout, pk=payout.pk, to_state="funds_sent", actor=ACTOR)
    deposit(payout, "usdt", total, gas)
    payout_complete(payout_id=payout.pk, amount_to=total, actor=ACTOR)
    model.add("host_wallet", "usdt", -total)
    model.add("host_wallet", "eth", -gas * WEI)
    model.add("network_fees", "eth", gas * WEI)
    model.add(f"clients:{c.reference}", "usdt", -total)


def op_write_off(model: Model) -> None:
    batch = sweep_and_fund(model, 0, send=False)
    if batch is None:
        return
    rows = rows_by_client(batch)
    order_release_and_close(
        kind=engine.kind_get("batch"),
        order_id=batch.pk,
        to_state="force_closed",
        actor=ACTOR,
        reason="model write-off",
        write_off=True,
    )
    for ref, eth, _fee in rows:
        model.add(f"clients:{ref}", "eth", -eth)
        model.add("platform_fees", "eth", eth)


def op_refund(model: Model, back: Decimal, gas: int) -> None:
    batch = sweep_and_fund(model, gas, send=True)
    if batch is None:
        return
    refund = (batch.eth_total * back).quantize(Decimal("1e-18"))
    loss = batch.eth_total - refund
    order_release_and_close(
        kind=engine.kind_get("batch"),
        order_id=batch.pk,
        to_state="force_closed",
        actor=ACTOR,
        reason="model refund",
        updates={
            "refund_tx_hash": "0x" + uuid.uuid4().hex * 2,
            "refund_received": refund,
            "loss_amount": loss,
            "loss_asset": "eth",
        },
    )
    model.add("host_wallet", "eth", refund)
    model.add("losses", "eth", loss)


def op_top_up(model: Model, asset: str, amount: Decimal) -> None:
    ledger_post(
        kind="owner_transfer",
        lines=[("host_wallet", asset, amount), ("owner_equity", asset, -amount)],
        actor="system:model",
        tx_hash="0x" + uuid.uuid4().hex * 2,
    )
    model.add("host_wallet", asset, amount)
    model.add("owner_equity", asset, amount)


eths = st.decimals(min_value=Decimal("1e-18"), max_value=Decimal("3"), places=18)
gases = st.integers(min_value=0, max_value=10**16)
OPS = st.one_of(
    st.tuples(st.just(op_intake), st.integers(0, 2), eths),
    st.tuples(st.just(op_intake), st.integers(0, 2), eths),
    st.tuples(
        st.just(op_convert),
        st.decimals(min_value=Decimal("0.5"), max_value=Decimal("1.2"), places=4),
        gases,
    ),
    st.tuples(st.just(op_payout), st.integers(0, 2), gases),
    st.tuples(st.just(op_write_off)),
    st.tuples(
        st.just(op_refund),
        st.decimals(min_value=Decimal("0.01"), max_value=Decimal("1"), places=6),
        gases,
    ),
    st.tuples(
        st.just(op_top_up),
        st.sampled_from(["eth", "usdt"]),
        st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1000"), places=6),
    ),
)
CLIENTS: list = []


@pytest.mark.django_db
@given(ops=st.lists(OPS, min_size=1, max_size=12))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_ledger_equals_a_model_of_any_sequence_and_every_invariant_holds(ops) -> None:  # noqa: ANN001
    sid = transaction.savepoint()
    CLIENTS[:] = [ClientFactory(reference=f"model-{i}", fee_percent=FEES[i]) for i in range(3)]
    model = Model()
    for op, *args in ops:
        op(model, *args)
    with connection.cursor() as cur:
        cur.execute("SET CONSTRAINTS ALL IMMEDIATE")  # every posting balanced, now
    assert actual() == model.expected()
    assert reconcile_breaches() == []
    transaction.savepoint_rollback(sid)
