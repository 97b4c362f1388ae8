"""reconcile against the books and the sandbox chain: each reproduced way of paying twice or
losing track of money, built directly in the database and on the chain, is named."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection

from backoffice import reconcile
from backoffice.reconcile import reconcile_run
from batches.models import ConversionBatch
from ledger.models import LedgerTransaction
from ledger.services import balances_get, ledger_post
from payouts import engine
from payouts.models import Accumulation, Payout, Transfer
from payouts.postings import WEI
from payouts.sending import wallet_maintain
from payouts.tasks import sweep_payouts
from payouts.transitions import Actor
from tests.conftest import Control
from tests.factories import PayoutFactory, order_in_state
from tests.payouts.test_engine import new_batch, run_to, step

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("tests")


@pytest.fixture(autouse=True)
def _no_retry_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconcile, "RETRY_DELAYS", (0, 0, 0))


def breaches() -> set[tuple[str, str]]:
    report = reconcile_run()
    assert report["ok"] is (not report["breaches"])
    return {(b["invariant"], b["object"]) for b in report["breaches"]}


def completed_batch(providers: Control) -> ConversionBatch:
    batch = new_batch()
    assert run_to("batch", batch.pk, providers, {"completed"}) == "completed"
    batch.refresh_from_db()
    return batch


def settle(providers: Control) -> None:
    """Enough blocks for every transfer to be final, and the wallet's follow-up run."""
    providers.post("/_sandbox/mine", {"empty_blocks": 13})
    wallet_maintain(actor=ACTOR)


def send_unrecorded(to: str, eth: Decimal) -> str:
    """A payment from the host wallet that our records never saw (a second send)."""
    client = engine.wallet()
    return client.broadcast(
        client.sign(client.build_eth_transfer(to, eth, nonce=client.get_nonce()))
    )


def test_a_full_run_ends_with_the_books_equal_to_the_chain_to_the_wei(providers: Control) -> None:
    completed_batch(providers)
    sweep_payouts()
    for payout in Payout.objects.all():
        assert run_to("payout", payout.pk, providers, {"completed"}) == "completed"
    settle(providers)
    assert breaches() == set()
    client = engine.wallet()
    books = balances_get()
    assert books["host_wallet"]["eth"] == client.get_balance()
    assert books["host_wallet"]["usdt"] == client.get_token_balance()
    gas = Decimal(0)
    for transfer in Transfer.objects.exclude(mined_hash=""):
        gas += Decimal(client.get_receipt(transfer.mined_hash).fee_wei) * WEI
    assert gas > 0 and books["network_fees"]["eth"] == gas
    # Every client was paid: nothing is owed, nothing is in transit.
    assert all(
        value == 0
        for name, assets in books.items()
        if name.startswith(("clients:", "in_transit:"))
        for value in assets.values()
    )
    assert books["platform_fees"]["usdt"] > 0


def test_it_names_a_second_deposit_for_the_same_rows(providers: Control) -> None:
    batch = completed_batch(providers)
    settle(providers)
    assert breaches() == set()
    send_unrecorded(batch.payin_address, batch.eth_total)
    assert ("chain: host wallet equals the ledger", "host_wallet:eth") in breaches()


def test_it_names_a_release_after_a_mined_deposit(providers: Control) -> None:
    batch = new_batch()
    step("batch", batch.pk)
    step("batch", batch.pk)  # the deposit is sent and mined
    deposit = Transfer.objects.get(batch=batch)
    # What the first round did: the transfer written off as dead and the rows released,
    # though the deposit had mined.
    with connection.cursor() as cur:
        cur.execute("UPDATE payouts_transfer SET state = 'dead' WHERE id = %s", [deposit.pk])
        cur.execute(
            "UPDATE payouts_accumulation SET state = 'pending', batch_id = NULL "
            "WHERE batch_id = %s",
            [batch.pk],
        )
        cur.execute("UPDATE batches_conversionbatch SET state = 'failed' WHERE id = %s", [batch.pk])
    found = breaches()
    assert ("chain: a transfer we gave up on mined", f"transfer:{deposit.pk}") in found
    assert (
        "changenow: closed orders received nothing unexpected",
        f"batch:{batch.pk}",
    ) in found
    assert ("chain: host wallet equals the ledger", "host_wallet:eth") in found


def test_it_names_an_abandoned_transfer_that_mines_later(providers: Control) -> None:
    providers.config(auto_mine=False)
    batch = new_batch()
    step("batch", batch.pk)
    step("batch", batch.pk)  # signed and broadcast, left in the mempool
    deposit = Transfer.objects.get(batch=batch)
    with connection.cursor() as cur:
        cur.execute("UPDATE payouts_transfer SET state = 'abandoned' WHERE id = %s", [deposit.pk])
    assert ("chain: a transfer we gave up on mined", f"transfer:{deposit.pk}") not in breaches()
    providers.post("/_sandbox/mine")
    assert ("chain: a transfer we gave up on mined", f"transfer:{deposit.pk}") in breaches()
    # The wallet's follow-up records it as mined and books it once final.
    settle(providers)
    deposit.refresh_from_db()
    assert deposit.state == "mined" and deposit.final_at is not None
    assert LedgerTransaction.objects.filter(kind="transfer", transfer=deposit).count() == 1
    assert not {b for b in breaches() if b[0].startswith("chain:")}


def test_it_names_a_ledger_leg_edited_by_hand(providers: Control) -> None:
    completed_batch(providers)
    with connection.cursor() as cur:
        cur.execute("SET CONSTRAINTS ALL IMMEDIATE")  # ALTER TABLE waits for no trigger
        cur.execute("ALTER TABLE ledger_leg DISABLE TRIGGER ledger_leg_append_only")
        cur.execute(
            "UPDATE ledger_leg SET amount = amount + 0.001 WHERE id = (SELECT max(id) FROM "
            "ledger_leg) RETURNING transaction_id"
        )
        (edited,) = cur.fetchone()
        cur.execute("ALTER TABLE ledger_leg ENABLE TRIGGER ledger_leg_append_only")
    assert ("ledger: every transaction balances", f"ledger_transaction:{edited}") in breaches()


def test_it_names_a_host_wallet_drained_behind_our_back(providers: Control) -> None:
    completed_batch(providers)
    settle(providers)
    assert breaches() == set()
    held = engine.wallet().get_token_balance()
    providers.post("/_sandbox/fund", {"usdt": str(held - Decimal("12.5"))})
    report = reconcile_run()
    (breach,) = report["breaches"]
    assert (breach["invariant"], breach["object"]) == (
        "chain: host wallet equals the ledger",
        "host_wallet:usdt",
    )
    assert "-12.5" in breach["detail"]


def test_it_names_a_usdt_share_changed_by_hand(providers: Control) -> None:
    batch = completed_batch(providers)
    with connection.cursor() as cur:
        cur.execute(
            "UPDATE payouts_accumulation SET usdt = usdt + 1 WHERE id = "
            "(SELECT min(id) FROM payouts_accumulation WHERE batch_id = %s)",
            [batch.pk],
        )
    row = Accumulation.objects.filter(batch=batch).order_by("id").first()
    found = breaches()
    assert ("ledger: client balance equals accumulations", f"clients:{row.client.reference}") in (
        found
    )
    assert ("2 completed batch split sums to the amount received", f"batch:{batch.pk}") in found


def test_it_names_a_completed_payout_that_was_never_booked(providers: Control) -> None:
    payout = order_in_state(PayoutFactory, "completed")
    assert ("ledger: every movement is booked", f"payout:{payout.pk}") in breaches()


def test_it_names_money_left_in_transit_for_a_terminal_order(providers: Control) -> None:
    batch = completed_batch(providers)
    settle(providers)
    ledger_post(
        kind="owner_transfer",
        lines=[
            (f"in_transit:{batch.pk}", "eth", Decimal("0.001")),
            ("owner_equity", "eth", Decimal("-0.001")),
        ],
        actor="system:tests",
        tx_hash="0x" + "cd" * 32,
    )
    assert (
        "ledger: terminal orders hold nothing in transit",
        f"in_transit:{batch.pk}",
    ) in breaches()


def test_it_names_a_leg_moved_to_an_account_that_does_not_exist(providers: Control) -> None:
    completed_batch(providers)
    with connection.cursor() as cur:
        cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cur.execute("ALTER TABLE ledger_leg DISABLE TRIGGER ledger_leg_append_only")
        cur.execute(
            "UPDATE ledger_leg SET account_id = 999999 WHERE id = (SELECT min(id) FROM "
            "ledger_leg) RETURNING transaction_id"
        )
        (edited,) = cur.fetchone()
        cur.execute("ALTER TABLE ledger_leg ENABLE TRIGGER ledger_leg_append_only")
    assert ("ledger: every transaction balances", f"ledger_transaction:{edited}") in breaches()
