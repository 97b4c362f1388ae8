"""One test per entry of docs/operations.md: create the situation against the sandbox,
resolve it the way the runbook says, and end with `reconcile` clean."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from backoffice.models import Alert
from backoffice.operations import watchdog_run
from backoffice.reconcile import reconcile_run
from batches.models import ConversionBatch
from batches.tasks import conversion_sweep
from payouts import engine
from payouts.models import Accumulation, Payout, Transfer
from payouts.operator import (
    OperatorError,
    order_force_close,
    order_force_complete,
    order_provider_action,
    order_retry,
    order_sync,
)
from payouts.services import client_upsert, client_validate
from payouts.tasks import sweep_payouts
from payouts.transitions import Actor
from tests.backoffice.test_operations import fresh_jobs
from tests.conftest import Control
from tests.factories import ClientFactory
from tests.payouts.test_engine import credit, new_batch, run_to, step

pytestmark = pytest.mark.django_db
OPS = Actor.system("runbook")


def funded(providers: Control) -> ConversionBatch:
    batch = new_batch()
    step("batch", batch.pk)
    step("batch", batch.pk)
    batch.refresh_from_db()
    assert batch.state == "funds_sent"
    return batch


def assert_clean() -> None:
    report = reconcile_run()
    assert report == {"ok": True, "breaches": []}, report


def test_exchange_failed_before_the_deposit(providers: Control) -> None:
    batch = new_batch()
    step("batch", batch.pk)
    batch.refresh_from_db()
    providers.script(batch.exchange_id, outcome="failed")
    step("batch", batch.pk)
    assert not Accumulation.objects.filter(state="converting").exists()
    again = conversion_sweep(actor=OPS)
    assert again.created
    run_to("batch", again.batch_id, providers, {"completed"})
    assert_clean()


@pytest.mark.parametrize("outcome", ["failed", "refunded"])
def test_exchange_failed_or_refunded_after_the_deposit(providers: Control, outcome: str) -> None:
    batch = funded(providers)
    providers.script(batch.exchange_id, outcome=outcome)
    assert run_to("batch", batch.pk, providers, {"needs_attention"}) == "needs_attention"
    # A person's word ("refund tx seen") never releases rows whose deposit mined.
    with pytest.raises(OperatorError, match="refund"):
        order_force_close(
            kind="batch", order_id=batch.pk, actor=OPS, reason=f"{outcome}: refund tx seen"
        )
    assert Accumulation.objects.filter(batch=batch, state="converting").count() == 4
    if outcome == "failed":  # ChangeNOW offers the refund: ask for it from the order
        order_provider_action(
            kind="batch", order_id=batch.pk, actor=OPS, reason="failed", which="refund"
        )
    providers.advance(60)
    refund_hash = providers.exchange(batch.exchange_id)["refundHash"]
    order_force_close(
        kind="batch",
        order_id=batch.pk,
        actor=OPS,
        reason=f"{outcome}: refunded",
        refund_tx=refund_hash,
    )
    batch.refresh_from_db()
    assert batch.refund_tx_hash == refund_hash and batch.loss_amount is not None
    assert Accumulation.objects.filter(state="pending", batch__isnull=True).count() == 4
    assert Transfer.objects.filter(batch=batch).count() == 1
    assert_clean()


def test_expired_after_the_deposit_then_finished_by_support(providers: Control) -> None:
    batch = funded(providers)
    providers.script(batch.exchange_id, outcome="expired")
    assert run_to("batch", batch.pk, providers, {"needs_attention"}) == "needs_attention"
    providers.script(batch.exchange_id, outcome="finished")
    providers.advance(60)
    # Money in flight is still followed: once ChangeNOW says finished, a sync completes it.
    detail = order_sync(kind="batch", order_id=batch.pk, actor=OPS).detail
    assert "finished" in detail and "completed" in detail
    batch.refresh_from_db()
    assert batch.state == "completed"
    with pytest.raises(OperatorError, match="already completed"):
        order_force_complete(kind="batch", order_id=batch.pk, actor=OPS, reason="support")
    assert_clean()


def test_stuck_in_waiting_is_alerted_then_completes(providers: Control) -> None:
    fresh_jobs()
    batch = funded(providers)
    providers.script(batch.exchange_id, outcome="stuck", status="waiting")
    step("batch", batch.pk)
    ConversionBatch.objects.filter(pk=batch.pk).update(
        state_changed_at=timezone.now() - timedelta(minutes=40)
    )
    watchdog_run(wallet_balances=lambda: (Decimal(100), Decimal(100000)))
    assert Alert.objects.filter(kind="deposit_not_seen", status="open").exists()
    providers.script(batch.exchange_id, outcome="finished")
    providers.advance(60)
    assert run_to("batch", batch.pk, providers, {"completed"}) == "completed"
    assert_clean()


def test_stuck_in_verifying_like_states_completes_after_sync(providers: Control) -> None:
    batch = funded(providers)
    providers.script(batch.exchange_id, outcome="stuck", status="exchanging")
    assert run_to("batch", batch.pk, providers, {"converting"}) == "converting"
    providers.script(batch.exchange_id, outcome="finished")
    providers.advance(60)
    order_sync(kind="batch", order_id=batch.pk, actor=OPS)
    batch.refresh_from_db()
    assert batch.state == "completed"
    assert_clean()


def test_transaction_not_mined_is_rebroadcast_with_the_same_bytes(providers: Control) -> None:
    providers.config(block_time=3600)
    batch = funded(providers)
    transfer = Transfer.objects.get(batch=batch)
    for _ in range(3):
        step("batch", batch.pk)
    assert Transfer.objects.filter(batch=batch).count() == 1
    assert Transfer.objects.get(batch=batch).tx_hash == transfer.tx_hash
    providers.post("/_sandbox/mine")
    assert run_to("batch", batch.pk, providers, {"completed"}) == "completed"
    assert_clean()


def test_signer_down_then_retry(providers: Control, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine, "MAX_RETRIES", 2)
    batch = new_batch()
    step("batch", batch.pk)
    providers.fail(path="/rpc", rpc_method="eth_signTransaction", status=502, count=2)
    step("batch", batch.pk)
    step("batch", batch.pk)
    batch.refresh_from_db()
    assert batch.state == "needs_attention"
    order_retry(kind="batch", order_id=batch.pk, actor=OPS, reason="signer restarted")
    assert run_to("batch", batch.pk, providers, {"completed"}) == "completed"
    assert Transfer.objects.filter(batch=batch).count() == 1
    assert_clean()


def test_changenow_down_creates_nothing_and_resumes(providers: Control) -> None:
    providers.config(error_rate=1)
    ClientFactory(reference="m0", instant=True)
    credit("m0", 3)
    result = conversion_sweep(actor=OPS)
    assert not result.created and result.reason.startswith("range_unavailable")
    providers.config(error_rate=0)
    result = conversion_sweep(actor=OPS)
    assert result.created
    run_to("batch", result.batch_id, providers, {"completed"})
    assert_clean()


def test_database_restored_from_backup(providers: Control, sandbox) -> None:  # noqa: ANN001
    batch = funded(providers)
    run_to("batch", batch.pk, providers, {"completed"})
    # An exchange and a transfer the restored database no longer knows about.
    stray = engine.changenow().create_exchange(
        from_currency="eth",
        to_currency="usdt",
        from_network="eth",
        to_network="eth",
        from_amount=Decimal("0.01"),
        address=sandbox.app.config.host_wallet,
    )
    wallet = engine.wallet()
    nonce_before = wallet.get_nonce()
    lost = wallet.sign(
        wallet.build_eth_transfer(stray.payin_address, Decimal("0.01"), nonce=nonce_before)
    )
    wallet.broadcast(lost)
    report = reconcile_run()
    # The lost send shows twice: the chain holds less than the books, and ChangeNOW lists
    # an exchange no order owns.
    assert [(b["invariant"], b["object"]) for b in report["breaches"]] == [
        ("chain: host wallet equals the ledger", "host_wallet:eth"),
        ("changenow: every exchange is ours", f"exchange:{stray.id}"),
    ]
    # The next send never reuses the nonce the lost transfer took.
    sweep_payouts()
    direct = Payout.objects.get(client__reference="m0")
    run_to("payout", direct.pk, providers, {"completed"})
    assert Transfer.objects.get(payout=direct).nonce > nonce_before


def test_a_clients_wrong_address_is_fixed_and_paid(providers: Control) -> None:
    batch = new_batch()
    run_to("batch", batch.pk, providers, {"completed"})
    sweep_payouts()
    btc = Payout.objects.get(client__reference="m1")
    providers.fail(
        path="/v2/exchange", method="POST", status=400, error="not_valid_address", message="bad"
    )
    step("payout", btc.pk)
    btc.refresh_from_db()
    assert btc.state == "failed"
    new_address = "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2"
    data = {
        "reference": "m1",
        "name": btc.client.name,
        "payout_strategy": "threshold",
        "payout_threshold_usd": "10",
        "payout_currency": "btc",
        "payout_network": "btc",
        "payout_address": new_address,
    }
    client_upsert(data=client_validate(data=data), actor=OPS, reason="client sent a new address")
    sweep_payouts()
    again = Payout.objects.exclude(pk=btc.pk).get(client__reference="m1")
    assert again.address == new_address
    assert run_to("payout", again.pk, providers, {"completed"}) == "completed"
    assert_clean()
