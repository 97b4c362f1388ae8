"""The host wallet through the engine, against the sandbox chain over HTTP: contiguous
nonces, replacement of stuck transactions, confirmations and reorgs, Transfer logs, gas."""

from __future__ import annotations

import io
import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from backoffice.models import Alert
from backoffice.reconcile import reconcile_run
from batches.models import ConversionBatch
from batches.tasks import conversion_sweep
from integrations.wallet.client import WalletClient
from payouts import sending
from payouts.models import Accumulation, Payout, Transfer, TransferTx
from payouts.operator import OperatorError, order_force_close, order_plan
from payouts.services import runtime_settings_update
from payouts.transitions import Actor
from tests.conftest import Control
from tests.factories import ClientFactory
from tests.payouts.test_engine import USDT_DEST, credit, new_batch, run_to, step, sweep_payouts

pytestmark = pytest.mark.django_db
OPS = Actor.system("wallet-test")


def settings_set(**changes: Any) -> None:
    runtime_settings_update(changes=changes, actor=OPS, reason="test")


def host_txs(providers: Control) -> list[dict[str, Any]]:
    state = providers.state()
    host = state["accounts"][0].lower()
    return [t for t in state["transactions"] if (t["from"] or "").lower() == host]


def mined_nonces(providers: Control) -> list[int]:
    return sorted(t["nonce"] for t in host_txs(providers) if t["block"] is not None)


def broadcast_batch(providers: Control) -> tuple[ConversionBatch, Transfer]:
    batch = new_batch()
    step("batch", batch.pk)
    step("batch", batch.pk)
    batch.refresh_from_db()
    transfer = Transfer.objects.get(batch=batch)
    assert transfer.state == "broadcast"
    return batch, transfer


def test_it_reuses_the_nonce_of_an_intent_whose_signing_failed_and_whose_order_failed(
    providers: Control,
) -> None:
    batch = new_batch()
    step("batch", batch.pk)
    providers.fail(path="/rpc", rpc_method="eth_signTransaction", status=502, count=1)
    step("batch", batch.pk)
    intent = Transfer.objects.get(batch=batch)
    assert (intent.state, intent.nonce) == ("intent", None)  # holds no nonce
    batch.refresh_from_db()
    providers.script(batch.exchange_id, outcome="expired")
    assert step("batch", batch.pk).to_state == "failed"
    intent.refresh_from_db()
    assert intent.state == "closed"
    again = ConversionBatch.objects.get(pk=conversion_sweep(actor=OPS).batch_id)
    assert run_to("batch", again.pk, providers, {"completed"}) == "completed"
    assert Transfer.objects.get(batch=again).nonce == 0
    assert mined_nonces(providers) == [0]


def test_it_speeds_up_a_transfer_stuck_in_the_mempool_after_the_limit(
    providers: Control,
) -> None:
    providers.config(auto_mine=False)
    settings_set(stuck_broadcast_minutes=5)
    batch, transfer = broadcast_batch(providers)
    assert sending.wallet_maintain(actor=OPS) == []  # not stuck yet
    Transfer.objects.filter(pk=transfer.pk).update(
        last_signed_at=timezone.now() - timedelta(minutes=6)
    )
    done = sending.wallet_maintain(actor=OPS)
    assert len(done) == 1 and done[0].startswith("speed_up")
    txs = list(TransferTx.objects.filter(transfer=transfer).order_by("id"))
    assert [t.kind for t in txs] == ["original", "speed_up"]
    assert txs[1].max_fee_per_gas >= txs[0].max_fee_per_gas * Decimal("1.125")
    assert txs[1].max_priority_fee_per_gas >= txs[0].max_priority_fee_per_gas * Decimal("1.125")
    assert {t.nonce for t in txs} == {transfer.nonce}
    providers.post("/_sandbox/mine", {"count": 3})
    assert run_to("batch", batch.pk, providers, {"completed"}) == "completed"
    transfer.refresh_from_db()
    assert transfer.mined_hash == txs[1].tx_hash
    chain = {t["hash"]: t for t in host_txs(providers)}
    assert chain[txs[0].tx_hash]["block"] is None and chain[txs[1].tx_hash]["block"] is not None
    assert len(providers.state()["deposits"]) == 1


def _cancel_by_command(batch: ConversionBatch, reason: str = "stop it") -> dict[str, Any]:
    out = io.StringIO()
    call_command(
        "replace_transfer",
        "batch",
        str(batch.pk),
        "--reason",
        reason,
        "--cancel",
        "--json",
        stdout=out,
    )
    return json.loads(out.getvalue())


def test_an_operator_speeds_up_and_then_cancels_by_command(providers: Control) -> None:
    providers.config(auto_mine=False)
    batch, transfer = broadcast_batch(providers)
    out = io.StringIO()
    call_command(
        "replace_transfer", "batch", str(batch.pk), "--reason", "slow", "--json", stdout=out
    )
    sped = json.loads(out.getvalue())
    assert set(sped) == {"order_id", "nonce", "old_hash", "new_hash", "max_fee_per_gas", "kind"}
    assert (sped["kind"], sped["nonce"], sped["old_hash"]) == ("speed_up", 0, transfer.tx_hash)
    cancelled = _cancel_by_command(batch, reason="exchange gone")
    assert cancelled["kind"] == "cancel" and cancelled["old_hash"] == sped["new_hash"]
    assert int(cancelled["max_fee_per_gas"]) > int(sped["max_fee_per_gas"])
    providers.post("/_sandbox/mine", {"count": 2})
    # The cancel used the nonce: the payment can never mine, so the rows may be released.
    result = order_force_close(kind="batch", order_id=batch.pk, actor=OPS, reason="cancelled")
    assert result.done
    transfer.refresh_from_db()
    assert transfer.state == "cancelled" and transfer.mined_hash == cancelled["new_hash"]
    mined = [t for t in host_txs(providers) if t["block"] is not None]
    assert [t["hash"] for t in mined] == [cancelled["new_hash"]]
    assert Decimal(mined[0]["eth"]) == 0 and providers.state()["deposits"] == []
    assert Accumulation.objects.filter(state="pending").count() == 4
    # Nothing pending any more: a further replacement is refused, exit status 1.
    with pytest.raises(CommandError, match="no pending transfer|already force_closed"):
        call_command("replace_transfer", "batch", str(batch.pk), "--reason", "x")


def test_it_refuses_to_speed_up_a_payment_once_its_cancel_was_signed(providers: Control) -> None:
    # A speed-up after a cancel re-signed the newest bytes (the cancel) and labelled them a
    # speed-up: mined, the self-send counted as the payment and the order waited forever.
    providers.config(auto_mine=False)
    batch, transfer = broadcast_batch(providers)
    cancel = _cancel_by_command(batch)
    plan = order_plan(kind="batch", order_id=batch.pk, action="speed_up")
    assert not plan.allowed and "cancel was already signed" in plan.refusal
    with pytest.raises(CommandError, match="cancel was already signed at nonce 0"):
        call_command("replace_transfer", "batch", str(batch.pk), "--reason", "faster please")
    kinds = list(TransferTx.objects.filter(transfer=transfer).order_by("id").values_list("kind"))
    assert kinds == [("original",), ("cancel",)]
    transfer.refresh_from_db()
    assert transfer.tx_hash == cancel["new_hash"]
    # The cancel itself may still be raised, and the upkeep raises the cancel, not the payment.
    raised = _cancel_by_command(batch)
    assert raised["kind"] == "cancel" and raised["old_hash"] == cancel["new_hash"]
    providers.post("/_sandbox/mine", {"count": 2})
    sending.wallet_maintain(actor=OPS)
    transfer.refresh_from_db()
    assert (transfer.state, transfer.mined_hash) == ("cancelled", raised["new_hash"])
    assert providers.state()["deposits"] == []


def _cancel_signed(providers: Control) -> tuple[Transfer, dict[str, Any]]:
    """A broadcast batch payment and its cancel, neither mined yet."""
    providers.config(auto_mine=False)
    batch, transfer = broadcast_batch(providers)
    return transfer, _cancel_by_command(batch)


def test_a_mined_send_back_to_the_host_is_a_cancel_whatever_its_record_says(
    providers: Control,
) -> None:
    transfer, cancel = _cancel_signed(providers)
    # As the speed-up of a cancel was recorded before the refusal above existed.
    TransferTx.objects.filter(tx_hash=cancel["new_hash"]).update(kind="speed_up")
    providers.post("/_sandbox/mine", {"count": 2})
    view = sending.transfer_check(WalletClient.from_settings(), transfer)
    transfer.refresh_from_db()
    assert view.state == transfer.state == "cancelled"
    assert transfer.mined_hash == cancel["new_hash"]


def test_reconcile_names_a_transfer_recorded_as_paid_whose_transaction_paid_the_host(
    providers: Control,
) -> None:
    transfer, cancel = _cancel_signed(providers)
    providers.post("/_sandbox/mine", {"count": 2})
    assert not [b for b in reconcile_run()["breaches"] if "transfer destination" in str(b)]
    # What the mislabelled cancel used to leave behind: recorded mined, as if it paid.
    Transfer.objects.filter(pk=transfer.pk).update(state="mined", mined_hash=cancel["new_hash"])
    breaches = [b for b in reconcile_run()["breaches"] if "transfer destination" in str(b)]
    assert len(breaches) == 1 and cancel["new_hash"] in str(breaches[0])


def test_it_stops_at_the_fee_ceiling_and_alerts(providers: Control) -> None:
    providers.config(auto_mine=False)
    batch, transfer = broadcast_batch(providers)
    ceiling_gwei = Decimal(transfer.max_fee_per_gas) / Decimal(10**9)
    settings_set(max_fee_per_gas_gwei=ceiling_gwei)
    with pytest.raises(CommandError, match="ceiling"):
        call_command("replace_transfer", "batch", str(batch.pk), "--reason", "slow")
    assert Alert.objects.filter(kind="fee_ceiling").count() == 1
    assert TransferTx.objects.filter(transfer=transfer).count() == 1


def test_it_fills_the_nonce_of_a_lost_transfer_whose_order_ended_so_later_ones_mine(
    providers: Control,
) -> None:
    providers.config(auto_mine=False)
    first, lost = broadcast_batch(providers)
    providers.post("/_sandbox/evict", {"hash": lost.tx_hash})  # the node forgot it
    order_force_close(kind="batch", order_id=first.pk, actor=OPS, reason="gone", write_off=True)
    ClientFactory(reference="next")
    credit("next", 2)
    second = ConversionBatch.objects.get(pk=conversion_sweep(actor=OPS).batch_id)
    step("batch", second.pk)
    step("batch", second.pk)  # signed at nonce 1 above the hole: the node refuses it
    assert Transfer.objects.get(batch=second).nonce == 1
    done = sending.wallet_maintain(actor=OPS)
    assert any(line.startswith("cancel") for line in done), done
    providers.post("/_sandbox/mine", {"count": 2})
    sending.wallet_maintain(actor=OPS)
    lost.refresh_from_db()
    assert lost.state == "cancelled"
    providers.post("/_sandbox/mine", {"count": 2})
    assert run_to("batch", second.pk, providers, {"completed"}) == "completed"
    assert mined_nonces(providers) == [0, 1]


def direct_payout(providers: Control) -> Payout:
    batch = new_batch()
    assert run_to("batch", batch.pk, providers, {"completed"}) == "completed"
    sweep_payouts()
    return Payout.objects.get(client__reference="m0")  # instant, USDT on Ethereum


def test_a_direct_payout_completes_only_when_final_and_once_after_a_reorg(
    providers: Control,
) -> None:
    settings_set(confirmations=3)
    payout = direct_payout(providers)
    step("payout", payout.pk)
    assert step("payout", payout.pk).note.startswith("mined, 1 confirmation")
    providers.post("/_sandbox/mine", {"empty_blocks": 1})
    assert step("payout", payout.pk).to_state == "funds_sent"  # 2 deep: not final
    # The chain drops the block that held it (and the node forgets the transaction).
    providers.post("/_sandbox/reorg", {"depth": 2, "drop": True})
    step("payout", payout.pk)
    transfer = Transfer.objects.get(payout=payout)
    assert transfer.state in ("broadcast", "mined")  # re-sent from the stored bytes
    for _ in range(4):
        providers.post("/_sandbox/mine", {"count": 1})
        step("payout", payout.pk)
    payout.refresh_from_db()
    assert payout.state == "completed"
    transfer.refresh_from_db()
    assert transfer.final_at is not None and transfer.gas_fee_wei > 0
    assert TransferTx.objects.filter(transfer=transfer).count() == 1
    received = providers.state()["balances"][USDT_DEST]["usdt"]
    assert Decimal(received) == payout.usdt_amount  # paid once
    assert set(Accumulation.objects.filter(payout=payout).values_list("state", flat=True)) == {
        "paid"
    }


def test_a_token_receipt_without_its_transfer_log_does_not_complete_the_payout(
    providers: Control, monkeypatch: pytest.MonkeyPatch
) -> None:
    payout = direct_payout(providers)
    real = WalletClient.rpc

    def logless(client: WalletClient, method: str, params: Any = ()) -> Any:
        answer = real(client, method, params)
        if method == "eth_getTransactionReceipt" and isinstance(answer, dict):
            answer = {**answer, "logs": []}  # status 1, but no Transfer event
        return answer

    monkeypatch.setattr(WalletClient, "rpc", logless)
    step("payout", payout.pk)
    assert step("payout", payout.pk).to_state == "needs_attention"
    payout.refresh_from_db()
    assert "Transfer log" in payout.last_error
    transfer = Transfer.objects.get(payout=payout)
    assert (transfer.state, transfer.receipt_status) == ("reverted", 1)
    assert set(Accumulation.objects.filter(payout=payout).values_list("state", flat=True)) == {
        "paying"
    }
    # Status 1 without the log proves nothing either way: no release without a person.
    with pytest.raises(OperatorError, match="funds left|may have left"):
        order_force_close(kind="payout", order_id=payout.pk, actor=OPS, reason="x")


def test_gas_is_recorded_from_each_receipt(providers: Control) -> None:
    batch, transfer = broadcast_batch(providers)
    run_to("batch", batch.pk, providers, {"completed"})
    transfer.refresh_from_db()
    receipt = sending.wallet().get_receipt(transfer.mined_hash)
    assert receipt is not None
    assert transfer.gas_fee_wei == receipt.gas_used * receipt.effective_gas_price > 0


def test_direct_payouts_below_the_minimum_wait(providers: Control) -> None:
    settings_set(direct_payout_min_usdt=Decimal("1000"))
    batch = new_batch()
    run_to("batch", batch.pk, providers, {"completed"})
    result = sweep_payouts()
    assert {"client": "m0", "reason": "below_direct_minimum:1000"} in result["skipped"]
    assert not Payout.objects.filter(client__reference="m0").exists()


class _ReadBeforeTheBlock(WalletClient):
    """A checker whose receipt lookups happened before the block (it saw nothing mined)."""

    def get_receipt(self, tx_hash_: str) -> Any:
        return None


def test_a_stale_checker_never_undoes_a_transfer_another_checker_made_final(
    providers: Control,
) -> None:
    batch, transfer = broadcast_batch(providers)
    stale = Transfer.objects.get(pk=transfer.pk)  # read while it was still pending
    providers.post("/_sandbox/mine")
    fresh = sending.transfer_check(sending.wallet(), Transfer.objects.get(pk=transfer.pk))
    assert fresh.state == "mined" and fresh.final
    # The slow checker finishes its pass: no receipt in its view, so it re-broadcasts.
    slow = _ReadBeforeTheBlock.from_settings()
    sending.transfer_check(slow, stale)
    transfer.refresh_from_db()
    assert transfer.state == "mined" and transfer.final_at is not None
    from ledger.models import LedgerTransaction

    assert LedgerTransaction.objects.filter(kind="transfer", transfer=transfer).count() == 1
