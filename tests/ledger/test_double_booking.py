"""Attempts to book one movement twice: racing checkers, retried completions, a second
close, the same owner transfer entered twice. Each ends with one posting, and reconcile
would name a second one (see test_reconcile)."""

from __future__ import annotations

import io
import json
import threading
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection

from backoffice import reconcile
from backoffice.reconcile import reconcile_run
from batches.services import batch_distribute
from ledger.models import LedgerTransaction
from ledger.services import balances_get
from payouts import engine
from payouts.models import Payout, Transfer
from payouts.operator import OperatorError, order_force_close
from payouts.sending import transfer_check
from payouts.services import payout_complete
from payouts.tasks import sweep_payouts
from payouts.transitions import Actor
from tests.conftest import Control
from tests.ledger.test_reconcile import completed_batch, send_unrecorded, settle
from tests.payouts.test_engine import new_batch, run_to, step

OWNER = "0x90F79bf6EB2c4f870365E785982E1f101E93b906"
ACTOR = Actor.system("tests")


@pytest.fixture(autouse=True)
def _no_retry_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reconcile, "RETRY_DELAYS", (0, 0, 0))


def postings(kind: str, **links: object) -> int:
    return LedgerTransaction.objects.filter(kind=kind, **links).count()


@pytest.mark.django_db(transaction=True)
def test_two_checkers_racing_on_a_final_transfer_book_it_once(providers: Control) -> None:
    batch = new_batch()
    step("batch", batch.pk)
    step("batch", batch.pk)
    providers.post("/_sandbox/mine", {"empty_blocks": 13})
    transfer_id = Transfer.objects.get(batch=batch).pk
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def check() -> None:
        try:
            transfer = Transfer.objects.get(pk=transfer_id)
            barrier.wait(timeout=10)
            transfer_check(engine.wallet(), transfer, actor=ACTOR)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=check) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors
    assert postings("transfer", transfer_id=transfer_id) == 1
    assert balances_get()[f"in_transit:{batch.pk}"]["eth"] == batch.eth_total


@pytest.mark.django_db
def test_a_retried_distribution_or_payout_completion_books_nothing_more(
    providers: Control,
) -> None:
    batch = completed_batch(providers)
    again = batch_distribute(batch_id=batch.pk, amount_to="999", actor=ACTOR)
    assert again.applied is False
    assert postings("batch_completed", batch_id=batch.pk) == 1
    sweep_payouts()
    payout = Payout.objects.filter(currency="usdt").get()
    assert run_to("payout", payout.pk, providers, {"completed"}) == "completed"
    assert payout_complete(payout_id=payout.pk, amount_to=None, actor=ACTOR) is False
    assert postings("payout_completed", payout_id=payout.pk) == 1
    settle(providers)
    assert reconcile_run()["ok"]


@pytest.mark.django_db
def test_a_second_force_close_books_no_second_write_off(providers: Control) -> None:
    batch = new_batch()
    step("batch", batch.pk)
    step("batch", batch.pk)  # funds left
    settle(providers)
    order_force_close(
        kind="batch", order_id=batch.pk, actor=ACTOR, reason="exchange lost", write_off=True
    )
    with pytest.raises(OperatorError, match="already force_closed"):
        order_force_close(
            kind="batch", order_id=batch.pk, actor=ACTOR, reason="again", write_off=True
        )
    assert postings("write_off", batch_id=batch.pk) == 1
    books = balances_get()
    # What left is absorbed by the clients' cancelled claim: nothing stays in transit.
    assert books[f"in_transit:{batch.pk}"]["eth"] == 0
    assert books["clients:m0"]["eth"] == 0 and books["clients:m1"]["eth"] == 0
    assert reconcile_run()["ok"], reconcile_run()


@pytest.mark.django_db
def test_a_write_off_before_any_send_makes_the_eth_platform_income(providers: Control) -> None:
    batch = new_batch()
    order_force_close(
        kind="batch", order_id=batch.pk, actor=ACTOR, reason="client asked", write_off=True
    )
    books = balances_get()
    assert books["platform_fees"]["eth"] == batch.eth_total
    assert reconcile_run()["ok"], reconcile_run()


def owner_transfer(*args: str) -> tuple[int, dict]:
    out = io.StringIO()
    try:
        call_command("owner_transfer", *args, "--json", stdout=out)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, json.loads(out.getvalue())


@pytest.mark.django_db
def test_an_owner_top_up_is_a_breach_until_booked_and_is_booked_once(providers: Control) -> None:
    top_up = providers.post("/_sandbox/pay", {"from": OWNER, "asset": "usdt", "amount": "250.5"})[
        "tx_hash"
    ]
    report = reconcile_run()
    assert [(b["invariant"], b["object"]) for b in report["breaches"]] == [
        ("chain: host wallet equals the ledger", "host_wallet:usdt")
    ]
    assert "+250.5" in report["breaches"][0]["detail"]
    code, body = owner_transfer(top_up, "--reason", "float for payouts")
    assert code == 0, body
    assert (body["direction"], body["asset"], body["amount"]) == ("top_up", "usdt", "250.5")
    assert reconcile_run()["ok"], reconcile_run()
    code, body = owner_transfer(top_up, "--reason", "float for payouts")
    assert (code, body["booked"]) == (1, False) and "already booked" in body["error"]
    assert balances_get()["owner_equity"]["usdt"] > Decimal("250.5")  # opening + top-up


@pytest.mark.django_db
def test_an_owner_withdrawal_books_its_gas(providers: Control) -> None:
    settle(providers)
    withdrawal = send_unrecorded(OWNER, Decimal("2"))
    providers.post("/_sandbox/mine", {"empty_blocks": 12})
    fees_before = balances_get().get("network_fees", {}).get("eth", Decimal(0))
    code, body = owner_transfer(withdrawal, "--reason", "owner draws profit")
    assert code == 0, body
    assert body["direction"] == "withdrawal" and Decimal(body["gas_eth"]) > 0
    assert balances_get()["network_fees"]["eth"] == fees_before + Decimal(body["gas_eth"])
    assert reconcile_run()["ok"], reconcile_run()


@pytest.mark.django_db
def test_owner_transfer_refuses_our_own_transfers_and_strangers(providers: Control) -> None:
    batch = new_batch()
    step("batch", batch.pk)
    step("batch", batch.pk)
    ours = Transfer.objects.get(batch=batch).tx_hash
    batch.refresh_from_db()
    code, body = owner_transfer(ours, "--reason", "x")
    assert code == 1 and "our own transfers" in body["error"]
    stranger = providers.post(
        "/_sandbox/pay", {"from": OWNER, "to": batch.payin_address, "amount": "1"}
    )["tx_hash"]
    providers.post("/_sandbox/mine", {"empty_blocks": 12})
    code, body = owner_transfer(stranger, "--reason", "x")
    assert code == 1 and "to or from the host wallet" in body["error"], body
    code, body = owner_transfer("0x1234", "--reason", "x")
    assert code == 1 and "not a transaction hash" in body["error"]
    code, body = owner_transfer("0x" + "ee" * 32, "--reason", "x")
    assert code == 1 and "not mined" in body["error"]
    assert not LedgerTransaction.objects.filter(kind="owner_transfer").exists()


@pytest.mark.django_db
def test_a_write_off_whose_deposit_mines_later_is_booked_and_named_until_settled(
    providers: Control,
) -> None:
    providers.config(auto_mine=False)
    batch = new_batch()
    step("batch", batch.pk)
    step("batch", batch.pk)  # broadcast, still in the mempool
    order_force_close(
        kind="batch", order_id=batch.pk, actor=ACTOR, reason="given up", write_off=True
    )
    providers.post("/_sandbox/mine")  # the deposit mines after all
    settle(providers)
    books = balances_get()
    # What left is absorbed by the written-off claim, not platform income.
    assert books[f"in_transit:{batch.pk}"]["eth"] == 0
    assert books.get("platform_fees", {}).get("eth", Decimal(0)) == 0
    providers.advance(60)  # the exchange converts it anyway and pays the host wallet
    batch.refresh_from_db()
    payout_hash = providers.exchange(batch.exchange_id)["payoutHash"]
    report = reconcile_run()
    assert [(b["invariant"], b["object"]) for b in report["breaches"]] == [
        ("changenow: a closed order's payout is unbooked", f"batch:{batch.pk}")
    ], report
    code, body = owner_transfer(payout_hash, "--reason", "USDT of written-off batch kept")
    assert code == 0, body
    assert reconcile_run()["ok"], reconcile_run()
