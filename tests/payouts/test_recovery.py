"""Recovery that can never pay twice (issue: operator actions under the engine's lock,
release only with proof, refunds booked). Every test here attacks a path that could move,
release or write off money: a race with a sending worker, a release after the deposit
mined, a forged refund, an order left to rot at the retry cap."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from backoffice.models import Alert
from batches.models import ConversionBatch
from batches.tasks import conversion_sweep
from integrations.wallet.client import WalletClient
from payouts import engine
from payouts.models import Accumulation, Payout, Transfer
from payouts.operator import (
    OperatorBusy,
    OperatorError,
    order_force_close,
    order_plan,
    order_provider_action,
    order_retry,
    order_sync,
)
from payouts.recovery import order_release_and_close
from payouts.transitions import Actor
from tests.conftest import Control
from tests.factories import ClientFactory
from tests.payouts.test_engine import credit, new_batch, run_to, step, sweep_payouts

OPS = Actor.system("recovery-test")
OTHER_WALLET = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def deposits_to(providers: Control, address: str) -> list[dict[str, Any]]:
    return [d for d in providers.state()["deposits"] if (d["to"] or "").lower() == address.lower()]


def chain_txs_from_host(providers: Control) -> list[dict[str, Any]]:
    state = providers.state()
    host = state["accounts"][0].lower()
    return [t for t in state["transactions"] if (t["from"] or "").lower() == host]


class SignHook:
    """Pause the engine inside the send path, after the intent is written and the wallet
    lock is held, just before the signer is asked: the window of the reproduced race."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.at_sign = threading.Event()
        self.go = threading.Event()
        real = WalletClient.sign

        def paused(client: WalletClient, tx: Any) -> Any:
            self.at_sign.set()
            assert self.go.wait(20), "the test never released the signer"
            return real(client, tx)

        monkeypatch.setattr(WalletClient, "sign", paused)

    def run_step_in_worker(self, kind: str, order_id: object) -> dict[str, Any]:
        out: dict[str, Any] = {}

        def work() -> None:
            try:
                out["result"] = engine.order_advance(
                    kind=kind, order_id=order_id, actor=Actor.system("worker"), force=True
                )
            except BaseException as exc:  # noqa: BLE001 - asserted by the test
                out["error"] = exc
            finally:
                connection.close()

        out["thread"] = threading.Thread(target=work)
        out["thread"].start()
        assert self.at_sign.wait(20), "the worker never reached the signer"
        return out


@pytest.mark.django_db(transaction=True)
class TestTheReproducedRace:
    def test_it_refuses_operator_actions_as_busy_while_a_worker_is_sending(
        self, providers: Control, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        batch = new_batch()
        step("batch", batch.pk)  # exchange created
        hook = SignHook(monkeypatch)
        worker = hook.run_step_in_worker("batch", batch.pk)
        try:
            with pytest.raises(OperatorBusy, match="busy"):
                order_force_close(kind="batch", order_id=batch.pk, actor=OPS, reason="race")
            with pytest.raises(OperatorBusy, match="busy"):
                order_force_close(
                    kind="batch", order_id=batch.pk, actor=OPS, reason="race", write_off=True
                )
            with pytest.raises(OperatorBusy):
                order_retry(kind="batch", order_id=batch.pk, actor=OPS, reason="race")
            with pytest.raises(OperatorBusy):
                order_sync(kind="batch", order_id=batch.pk, actor=OPS)
            with pytest.raises(CommandError, match="busy"):
                call_command("force_close", "batch", str(batch.pk), "--reason", "race")
            with pytest.raises(CommandError, match="busy"):
                call_command(
                    "replace_transfer", "batch", str(batch.pk), "--reason", "race", "--cancel"
                )
        finally:
            hook.go.set()
            worker["thread"].join(30)
        assert "error" not in worker, worker.get("error")
        batch.refresh_from_db()
        assert batch.state == "funds_sent"
        # Nothing the refused actions touched: the rows are still in the batch, one send.
        assert Accumulation.objects.filter(batch=batch, state="converting").count() == 4
        assert len(deposits_to(providers, batch.payin_address)) == 1
        assert Transfer.objects.filter(batch=batch).count() == 1

    def test_it_never_broadcasts_for_an_order_closed_while_it_was_being_signed(
        self, providers: Control, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A close that bypasses the lock (the first round's operator path did) still cannot
        make the worker pay: the send path re-reads the order before broadcasting."""
        batch = new_batch()
        step("batch", batch.pk)
        hook = SignHook(monkeypatch)
        worker = hook.run_step_in_worker("batch", batch.pk)
        try:
            kind = engine.kind_get("batch")
            order_release_and_close(
                kind=kind, order_id=batch.pk, to_state="force_closed", actor=OPS, reason="race"
            )
        finally:
            hook.go.set()
            worker["thread"].join(30)
        assert "error" not in worker, worker.get("error")
        assert "send stopped" in worker["result"].note, worker["result"].note
        transfer = Transfer.objects.get(batch=batch)
        assert transfer.state == "closed" and transfer.raw_tx == ""
        assert deposits_to(providers, batch.payin_address) == []
        assert chain_txs_from_host(providers) == []
        assert Accumulation.objects.filter(state="pending", batch__isnull=True).count() == 4
        # The freed nonce is the next one used: no gap for the next send.
        again = ConversionBatch.objects.get(pk=conversion_sweep(actor=OPS).batch_id)
        assert run_to("batch", again.pk, providers, {"completed"}) == "completed"
        assert Transfer.objects.get(batch=again).nonce == 0


def stuck_batch(providers: Control) -> ConversionBatch:
    batch = new_batch()
    step("batch", batch.pk)
    step("batch", batch.pk)
    batch.refresh_from_db()
    providers.script(batch.exchange_id, outcome="stuck", status="exchanging")
    providers.advance(30)
    assert step("batch", batch.pk).to_state == "converting"
    return batch


def refund(providers: Control, order: Any, amount: str) -> str:
    """ChangeNOW refunds the order's exchange; returns the refund transaction's hash."""
    providers.script(order.exchange_id, outcome="refunded", refund_amount=amount)
    providers.advance(60)
    exchange = providers.exchange(order.exchange_id)
    assert exchange["status"] == "refunded", exchange
    return exchange["refundHash"]


@pytest.mark.django_db
class TestReleaseNeedsProof:
    def test_it_refuses_to_release_a_batch_whose_deposit_mined(self, providers: Control) -> None:
        batch = stuck_batch(providers)
        with pytest.raises(OperatorError, match="refund") as refused:
            order_force_close(kind="batch", order_id=batch.pk, actor=OPS, reason="stuck")
        assert "--refund-tx" in str(refused.value) and "write the rows off" in str(refused.value)
        plan = order_plan(kind="batch", order_id=batch.pk, action="force_close")
        assert not plan.allowed and plan.refusal == str(refused.value)
        with pytest.raises(CommandError, match="refund"):
            call_command("force_close", "batch", str(batch.pk), "--reason", "stuck")
        batch.refresh_from_db()
        assert batch.state == "converting"
        assert Accumulation.objects.filter(batch=batch, state="converting").count() == 4

    def test_it_releases_with_a_proved_refund_and_books_the_shortfall(
        self, providers: Control
    ) -> None:
        batch = stuck_batch(providers)
        refund_hash = refund(providers, batch, "0.0195")  # of a 0.02 ETH deposit
        assert step("batch", batch.pk).to_state == "needs_attention"
        batch.refresh_from_db()
        assert batch.provider_refund_hash == refund_hash
        assert batch.provider_refund_amount == Decimal("0.0195")
        result = order_force_close(
            kind="batch", order_id=batch.pk, actor=OPS, reason="refunded", refund_tx=refund_hash
        )
        assert result.done and "loss 0.0005" in result.detail
        batch.refresh_from_db()
        assert batch.state == "force_closed"
        assert (batch.refund_tx_hash, batch.refund_received) == (refund_hash, Decimal("0.0195"))
        assert (batch.loss_amount, batch.loss_asset) == (Decimal("0.0005"), "eth")
        rows = Accumulation.objects.filter(client__reference__in=["m0", "m1"])
        assert {(r.state, r.batch_id) for r in rows} == {("pending", None)}
        assert sum(r.eth for r in rows) == Decimal("0.02")  # released at full value
        # The next sweep sends the rows once more, and only once.
        again = ConversionBatch.objects.get(pk=conversion_sweep(actor=OPS).batch_id)
        assert run_to("batch", again.pk, providers, {"completed"}) == "completed"
        again.refresh_from_db()
        assert len(deposits_to(providers, again.payin_address)) == 1
        assert len(providers.state()["deposits"]) == 2
        # The same refund can never prove a second release.
        other = stuck_batch_for(providers, "late")
        with pytest.raises(OperatorError, match="already proved"):
            order_force_close(
                kind="batch", order_id=other.pk, actor=OPS, reason="x", refund_tx=refund_hash
            )

    def test_it_refuses_forged_and_unrelated_refund_proofs(self, providers: Control) -> None:
        batch = stuck_batch(providers)
        deposit = Transfer.objects.get(batch=batch)
        for forged, why in [
            ("0x1234", "not a transaction hash"),
            ("0x" + "ab" * 32, "not mined"),
            (deposit.tx_hash, "one of our own transfers"),
        ]:
            with pytest.raises(OperatorError, match=why):
                order_force_close(
                    kind="batch", order_id=batch.pk, actor=OPS, reason="x", refund_tx=forged
                )
        # A real refund, but of another order's exchange.
        other = stuck_batch_for(providers, "other")
        other_refund = refund(providers, other, "0.009")
        with pytest.raises(OperatorError, match="does not report this refund"):
            order_force_close(
                kind="batch", order_id=batch.pk, actor=OPS, reason="x", refund_tx=other_refund
            )
        batch.refresh_from_db()
        assert batch.state == "converting" and batch.refund_tx_hash == ""
        assert Accumulation.objects.filter(batch=batch, state="converting").count() == 4

    def test_it_refuses_a_refund_that_went_to_another_address(self, providers: Control) -> None:
        batch = stuck_batch(providers)
        providers.script(batch.exchange_id, outcome="failed")  # after our deposit
        providers.advance(60)
        assert run_to("batch", batch.pk, providers, {"needs_attention"}) == "needs_attention"
        # Someone asked ChangeNOW for the refund to an address that is not ours.
        engine.changenow().request_refund(batch.exchange_id, address=OTHER_WALLET)
        providers.advance(60)
        refund_hash = providers.exchange(batch.exchange_id)["refundHash"]
        assert refund_hash
        with pytest.raises(OperatorError, match="not a payment to the host wallet"):
            order_force_close(
                kind="batch", order_id=batch.pk, actor=OPS, reason="x", refund_tx=refund_hash
            )

    def test_an_operator_asks_changenow_for_the_refund_and_then_releases_with_it(
        self, providers: Control
    ) -> None:
        batch = stuck_batch(providers)
        providers.script(batch.exchange_id, outcome="failed")  # after our deposit
        providers.advance(60)
        assert run_to("batch", batch.pk, providers, {"needs_attention"}) == "needs_attention"
        plan = order_plan(kind="batch", order_id=batch.pk, action="refund")
        assert plan.allowed and "host wallet" in plan.effect
        order_provider_action(
            kind="batch", order_id=batch.pk, actor=OPS, reason="exchange failed", which="refund"
        )
        providers.advance(60)
        step("batch", batch.pk)  # the order is still polled: it records the refund
        batch.refresh_from_db()
        assert batch.provider_refund_hash
        result = order_force_close(
            kind="batch",
            order_id=batch.pk,
            actor=OPS,
            reason="refunded on request",
            refund_tx=batch.provider_refund_hash,
        )
        assert result.done
        assert Accumulation.objects.filter(state="pending").count() == 4

    def test_it_refuses_to_release_a_payout_whose_deposit_mined_until_refunded(
        self, providers: Control
    ) -> None:
        batch = new_batch()
        run_to("batch", batch.pk, providers, {"completed"})
        sweep_payouts()
        payout = Payout.objects.get(client__reference="m1")  # BTC, through an exchange
        step("payout", payout.pk)
        step("payout", payout.pk)
        payout.refresh_from_db()
        assert payout.state == "funds_sent"
        paid_rows = list(Accumulation.objects.filter(payout=payout).values_list("pk", "usdt"))
        with pytest.raises(OperatorError, match="refund"):
            order_force_close(kind="payout", order_id=payout.pk, actor=OPS, reason="stuck")
        refund_hash = refund(providers, payout, str(payout.usdt_amount))
        result = order_force_close(
            kind="payout", order_id=payout.pk, actor=OPS, reason="refunded", refund_tx=refund_hash
        )
        assert result.done
        payout.refresh_from_db()
        assert (payout.loss_amount, payout.loss_asset) == (Decimal(0), "usdt")
        rows = Accumulation.objects.filter(pk__in=[pk for pk, _ in paid_rows])
        assert {(r.state, r.payout_id) for r in rows} == {("converted", None)}
        # Paid again once, by a new payout.
        sweep_payouts()
        again = Payout.objects.exclude(pk=payout.pk).get(client__reference="m1")
        assert run_to("payout", again.pk, providers, {"completed"}) == "completed"
        again.refresh_from_db()
        assert len(deposits_to(providers, again.payin_address)) == 1

    def test_a_write_off_is_always_possible_with_a_reason(self, providers: Control) -> None:
        batch = stuck_batch(providers)
        with pytest.raises(OperatorError, match="reason"):
            order_force_close(kind="batch", order_id=batch.pk, actor=OPS, reason="", write_off=True)
        result = order_force_close(
            kind="batch", order_id=batch.pk, actor=OPS, reason="lost", write_off=True
        )
        assert result.done and "written off" in result.detail
        assert set(Accumulation.objects.values_list("state", flat=True)) == {"written_off"}
        # Written-off rows are never swept again.
        assert not conversion_sweep(actor=OPS).created


def stuck_batch_for(providers: Control, reference: str) -> ConversionBatch:
    ClientFactory(reference=reference)
    credit(reference, 2)
    batch = ConversionBatch.objects.get(pk=conversion_sweep(actor=OPS).batch_id)
    step("batch", batch.pk)
    step("batch", batch.pk)
    batch.refresh_from_db()
    providers.script(batch.exchange_id, outcome="stuck", status="exchanging")
    providers.advance(30)
    step("batch", batch.pk)
    return batch


@pytest.mark.django_db
class TestMoneyInFlightIsPolledForEver:
    def test_it_completes_by_itself_when_changenow_finishes_after_the_retry_cap(
        self, providers: Control, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(engine, "MAX_RETRIES", 3)
        batch = stuck_batch(providers)
        providers.config(error_rate=1.0)  # ChangeNOW answers 503 to everything
        for _ in range(6):
            step("batch", batch.pk)
        batch.refresh_from_db()
        assert batch.state == "converting" and batch.retry_count >= 6
        assert batch.next_attempt_at is not None  # still scheduled: never silent
        alert = Alert.objects.get(kind="retry_cap")
        assert str(batch.pk)[:8] in alert.message
        providers.config(error_rate=0)
        providers.script(batch.exchange_id, outcome="finished")
        providers.advance(2 * 3600)
        assert step("batch", batch.pk).to_state == "completed"
        assert Accumulation.objects.filter(state="converted").count() == 4

    def test_scattered_provider_errors_never_push_an_order_to_attention(
        self, providers: Control, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(engine, "MAX_RETRIES", 3)
        batch = stuck_batch(providers)
        for status in [503, 429, 502, 503, 429, 503, 500, 429]:
            providers.fail(path="/v2/exchange/by-id", status=status, count=5)
            step("batch", batch.pk)  # fails
            step("batch", batch.pk)  # reads fine: the count starts again
        batch.refresh_from_db()
        assert batch.state == "converting" and batch.retry_count == 0
        assert not Alert.objects.filter(kind="retry_cap").exists()

    def test_an_order_needing_attention_after_a_send_completes_when_changenow_finishes(
        self, providers: Control
    ) -> None:
        batch = stuck_batch(providers)
        providers.script(batch.exchange_id, outcome="unknown", status="hold")
        providers.advance(30)
        engine.kind_get("batch")
        from payouts.engine import _needs_attention

        _needs_attention(engine.kind_get("batch"), batch.pk, "unknown status", "engine", OPS)
        batch.refresh_from_db()
        assert batch.state == "needs_attention" and batch.next_attempt_at is not None
        providers.script(batch.exchange_id, outcome="finished")
        providers.advance(3600)
        ConversionBatch.objects.filter(pk=batch.pk).update(
            next_attempt_at=timezone.now() - timedelta(seconds=1)
        )
        assert ("batch", batch.pk) in engine.orders_open()
        assert step("batch", batch.pk, force=False).to_state == "completed"


@pytest.mark.django_db
def test_rows_that_keep_failing_raise_one_alert_naming_the_cause(providers: Control) -> None:
    ClientFactory(reference="acme")
    credit("acme", 3)
    for _ in range(3):
        batch = ConversionBatch.objects.get(pk=conversion_sweep(actor=OPS).batch_id)
        providers.fail(
            path="/v2/exchange", method="POST", status=400, error="pair_is_inactive", message="no"
        )
        assert step("batch", batch.pk).to_state == "failed"
    alert = Alert.objects.get(kind="repeated_failure")
    assert "3 times" in alert.message and "pair_is_inactive" in alert.message
    assert Alert.objects.filter(kind="repeated_failure").count() == 1
