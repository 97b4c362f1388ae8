"""The funded-order engine against the sandbox over real HTTP: batches and payouts from
reservation to completion, and every way a step can go wrong."""

from __future__ import annotations

from decimal import Decimal

import pytest

from backoffice.reconcile import reconcile_run
from batches.models import ConversionBatch
from batches.tasks import conversion_sweep
from payouts import engine
from payouts.engine import order_advance
from payouts.locks import lock_key
from payouts.models import (
    Accumulation,
    AuditEvent,
    ExchangeAttempt,
    Payout,
    Transfer,
    TransferTx,
)
from payouts.services import accumulation_record, runtime_settings_update
from payouts.tasks import sweep_payouts
from payouts.transitions import Actor
from tests.conftest import Control, nowpayments_pay
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("tests")
BTC = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
USDT_DEST = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"


def credit(reference: str, n: int, eth: str = "0.005", usd: str = "15") -> None:
    for i in range(n):
        nowpayments_pay(eth)
        accumulation_record(
            client_reference=reference,
            payment_id=f"{reference}-{i}-{eth}",
            eth=eth,
            usd=usd,
            order_id=f"{reference}:inv-{i}",
            actor=ACTOR,
        )


def new_batch(clients: int = 2, per_client: int = 2) -> ConversionBatch:
    for c in range(clients):
        ref = f"m{c}"
        if c == 0:
            ClientFactory(reference=ref, instant=True, payout_address=USDT_DEST)
        else:
            ClientFactory(
                reference=ref,
                payout_currency="btc",
                payout_network="btc",
                payout_address=BTC,
                payout_threshold_usd=Decimal("10"),
            )
        credit(ref, per_client)
    result = conversion_sweep(actor=ACTOR)
    assert result.created, result
    return ConversionBatch.objects.get(pk=result.batch_id)


def step(kind: str, order_id: object, force: bool = True) -> engine.StepResult:
    return order_advance(kind=kind, order_id=order_id, actor=ACTOR, force=force)


def run_to(kind: str, order_id: object, control: Control, until: set[str], limit: int = 20) -> str:
    model = engine.kind_get(kind).model
    for _ in range(limit):
        state = model.objects.get(pk=order_id).state
        if state in until:
            return state
        step(kind, order_id)
        control.advance(5)
    return model.objects.get(pk=order_id).state


def test_a_batch_goes_from_reservation_to_an_exact_distribution(providers: Control) -> None:
    batch = new_batch()
    assert step("batch", batch.pk).to_state == "exchange_created"
    batch.refresh_from_db()
    attempt = ExchangeAttempt.objects.get(batch=batch)
    assert (attempt.exchange_id, attempt.payin_address) == (batch.exchange_id, batch.payin_address)
    assert attempt.amount_from == batch.eth_total

    assert step("batch", batch.pk).to_state == "funds_sent"
    transfer = Transfer.objects.get(batch=batch)
    assert (transfer.asset, transfer.amount, transfer.to_address) == (
        "eth",
        batch.eth_total,
        batch.payin_address,
    )
    assert transfer.state == "broadcast" and transfer.tx_hash
    assert run_to("batch", batch.pk, providers, {"completed"}) == "completed"

    batch.refresh_from_db()
    exchange = providers.exchange(batch.exchange_id)
    assert Decimal(str(exchange["amountTo"])) >= batch.usdt_received
    rows = Accumulation.objects.filter(batch=batch)
    assert {r.state for r in rows} == {"converted"}
    assert sum(r.usdt for r in rows) + batch.platform_usdt == batch.usdt_received
    assert len(providers.state()["deposits"]) == 1
    assert reconcile_run() == {"ok": True, "breaches": []}
    statuses = [h["status"] for h in ExchangeAttempt.objects.get(batch=batch).status_history]
    assert statuses[0] == "new" and statuses[-1] == "finished"


def test_payouts_pay_each_client_in_its_currency(providers: Control) -> None:
    batch = new_batch()
    run_to("batch", batch.pk, providers, {"completed"})
    result = sweep_payouts()
    assert result["created"] == 2, result
    payouts = {p.client.reference: p for p in Payout.objects.select_related("client")}
    direct, btc = payouts["m0"], payouts["m1"]
    assert direct.usdt_amount == sum(
        a.usdt for a in Accumulation.objects.filter(client=direct.client)
    )

    assert run_to("payout", direct.pk, providers, {"completed"}) == "completed"
    transfer = Transfer.objects.get(payout=direct)
    assert (transfer.asset, transfer.to_address, transfer.amount) == (
        "usdt",
        USDT_DEST,
        direct.usdt_amount,
    )
    assert not ExchangeAttempt.objects.filter(payout=direct).exists()

    assert run_to("payout", btc.pk, providers, {"completed"}) == "completed"
    btc.refresh_from_db()
    attempt = ExchangeAttempt.objects.get(payout=btc)
    assert (attempt.to_currency, attempt.payout_address) == ("btc", BTC)
    assert btc.amount_to is not None and btc.amount_to > 0
    assert set(Accumulation.objects.values_list("state", flat=True)) == {"paid"}
    assert reconcile_run()["ok"]


def test_only_converted_rows_are_paid_out(providers: Control) -> None:
    new_batch()  # converting, not converted
    assert sweep_payouts()["created"] == 0
    assert not Payout.objects.exists()


def test_a_payout_waits_while_payouts_are_paused(providers: Control) -> None:
    batch = new_batch()
    run_to("batch", batch.pk, providers, {"completed"})
    runtime_settings_update(changes={"payouts_paused": True}, actor=ACTOR, reason="incident")
    assert sweep_payouts()["created"] == 0
    assert Accumulation.objects.filter(state="converted").count() == 4


def test_a_client_below_the_exchange_minimum_is_skipped(providers: Control) -> None:
    batch = new_batch()
    run_to("batch", batch.pk, providers, {"completed"})
    providers.config(min_amounts={"usdt": "1000"})
    result = sweep_payouts()
    assert result["created"] == 1  # the direct USDT client needs no exchange
    assert result["skipped"][0]["client"] == "m1"
    assert result["skipped"][0]["reason"].startswith("below_exchange_minimum")


@pytest.mark.parametrize("outcome", ["failed", "expired"])
def test_an_exchange_lost_before_deposit_releases_rows_to_the_next_sweep(
    providers: Control, outcome: str
) -> None:
    batch = new_batch()
    step("batch", batch.pk)
    batch.refresh_from_db()
    providers.script(batch.exchange_id, outcome=outcome)
    assert step("batch", batch.pk).to_state == "failed"
    assert not Transfer.objects.filter(batch=batch).exists()
    assert Accumulation.objects.filter(state="pending", batch__isnull=True).count() == 4
    again = conversion_sweep(actor=ACTOR)
    assert again.created and again.rows == 4
    assert reconcile_run()["ok"]


@pytest.mark.parametrize("outcome", ["refunded", "expired", "failed"])
def test_an_exchange_lost_after_deposit_needs_attention_and_nothing_is_resent(
    providers: Control, outcome: str
) -> None:
    batch = new_batch()
    step("batch", batch.pk)
    step("batch", batch.pk)
    batch.refresh_from_db()
    providers.script(batch.exchange_id, outcome=outcome)
    assert run_to("batch", batch.pk, providers, {"needs_attention"}) == "needs_attention"
    for _ in range(3):
        step("batch", batch.pk)
    assert Transfer.objects.filter(batch=batch).count() == 1
    assert len(providers.state()["deposits"]) == 1
    assert Accumulation.objects.filter(batch=batch, state="converting").count() == 4
    batch.refresh_from_db()
    assert outcome in batch.last_error


def test_an_unknown_status_is_recorded_and_never_crashes(providers: Control) -> None:
    batch = new_batch()
    step("batch", batch.pk)
    step("batch", batch.pk)
    batch.refresh_from_db()
    providers.script(batch.exchange_id, outcome="unknown", status="on_hold")
    providers.advance(60)
    for _ in range(3):
        result = step("batch", batch.pk)
    batch.refresh_from_db()
    assert batch.state in ("funds_sent", "converting")
    assert batch.provider_status == "on_hold"
    assert "unknown status" in result.note


def test_a_broadcast_that_failed_is_retried_with_the_same_signed_bytes(
    providers: Control,
) -> None:
    batch = new_batch()
    step("batch", batch.pk)
    providers.fail(path="/rpc", rpc_method="eth_sendRawTransaction", status=502, count=1)
    result = step("batch", batch.pk)
    assert result.to_state == "exchange_created"
    transfer = Transfer.objects.get(batch=batch)
    assert transfer.state == "signed"
    batch.refresh_from_db()
    assert batch.retry_count == 1 and batch.next_attempt_at is not None
    assert step("batch", batch.pk, force=False).note == "backing off"
    assert step("batch", batch.pk).to_state == "funds_sent"
    again = Transfer.objects.get(batch=batch)
    assert (again.tx_hash, again.raw_tx, again.state) == (
        transfer.tx_hash,
        transfer.raw_tx,
        "broadcast",
    )
    assert len(providers.state()["deposits"]) <= 1
    assert run_to("batch", batch.pk, providers, {"completed"}) == "completed"
    assert len(providers.state()["deposits"]) == 1


def test_a_lost_broadcast_answer_does_not_send_twice(providers: Control) -> None:
    batch = new_batch()
    step("batch", batch.pk)
    # The node accepts the transaction but the answer is lost.
    providers.fail(
        path="/rpc", rpc_method="eth_sendRawTransaction", status=502, count=1, process=True
    )
    step("batch", batch.pk)
    assert run_to("batch", batch.pk, providers, {"completed"}) == "completed"
    assert Transfer.objects.filter(batch=batch).count() == 1
    assert len(providers.state()["deposits"]) == 1


def test_transient_create_errors_back_off_then_need_attention_when_exhausted(
    providers: Control, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "MAX_RETRIES", 3)
    batch = new_batch()
    providers.fail(path="/v2/exchange", method="POST", status=503, count=10)
    notes = [step("batch", batch.pk).note for _ in range(3)]
    assert notes[0].startswith("retry 1/3") and notes[1].startswith("retry 2/3")
    batch.refresh_from_db()
    assert batch.state == "needs_attention"
    assert batch.retry_count == 3 and batch.last_error_code == "server_error"
    assert ExchangeAttempt.objects.filter(batch=batch, status="create_failed").count() == 3
    assert AuditEvent.objects.filter(object_id=str(batch.pk), kind="step_error").count() == 3


def test_a_permanently_refused_payout_fails_and_releases_its_rows(providers: Control) -> None:
    batch = new_batch()
    run_to("batch", batch.pk, providers, {"completed"})
    sweep_payouts()
    btc = Payout.objects.get(client__reference="m1")
    providers.fail(
        path="/v2/exchange",
        method="POST",
        status=400,
        error="not_valid_address",
        message="Invalid address",
    )
    assert step("payout", btc.pk).to_state == "failed"
    btc.refresh_from_db()
    assert btc.last_error_code == "not_valid_address"
    rows = Accumulation.objects.filter(client__reference="m1")
    assert {(r.state, r.payout_id) for r in rows} == {("converted", None)}
    assert reconcile_run()["ok"]


def test_a_step_is_skipped_while_another_worker_holds_the_order(providers: Control) -> None:
    from django.db import connections

    batch = new_batch()
    other = connections.create_connection("default")
    try:
        with other.cursor() as cur:
            key = lock_key("order:batch", str(batch.pk))
            cur.execute("SELECT pg_advisory_lock(%s)", [key])
            result = step("batch", batch.pk)
            cur.execute("SELECT pg_advisory_unlock(%s)", [key])
    finally:
        other.close()
    assert result.note == "locked by another worker"
    assert not ExchangeAttempt.objects.exists()


def test_the_sweep_waits_below_the_exchange_minimum(providers: Control) -> None:
    ClientFactory(reference="tiny")
    credit("tiny", 2, eth="0.001", usd="15")  # $30, but 0.002 ETH
    providers.config(min_amounts={"eth": "0.01"})
    result = conversion_sweep(actor=ACTOR)
    assert (result.created, result.reason) == (False, "below_exchange_minimum")


def test_the_sweep_fails_loudly_when_the_minimum_cannot_be_read(
    providers: Control, settings
) -> None:  # noqa: ANN001
    settings.CHANGENOW_API_URL = "http://127.0.0.1:9"  # nothing listens there
    ClientFactory(reference="acme")
    credit("acme", 3)
    result = conversion_sweep(actor=ACTOR)
    assert not result.created and result.reason.startswith("range_unavailable")
    assert not ConversionBatch.objects.exists()


def test_a_signed_transfer_the_exchange_no_longer_wants_is_cancelled_before_release(
    providers: Control,
) -> None:
    batch = new_batch()
    step("batch", batch.pk)
    providers.fail(path="/rpc", rpc_method="eth_sendRawTransaction", status=502, count=1)
    step("batch", batch.pk)
    transfer = Transfer.objects.get(batch=batch)
    assert transfer.state == "signed"
    batch.refresh_from_db()
    providers.script(batch.exchange_id, outcome="expired")
    # A signed transaction is never assumed dead: its nonce is filled by a cancel first.
    first = step("batch", batch.pk)
    assert first.to_state == "exchange_created" and "cancelling" in first.note
    assert Accumulation.objects.filter(state="converting").count() == 4
    assert TransferTx.objects.filter(transfer=transfer, kind="cancel").count() == 1
    assert step("batch", batch.pk).to_state == "failed"
    transfer.refresh_from_db()
    assert transfer.state == "cancelled" and transfer.final_at is not None
    assert providers.state()["deposits"] == []
    assert Accumulation.objects.filter(state="pending").count() == 4
    assert reconcile_run()["ok"]


def test_a_destination_refused_by_changenow_is_not_retried_until_it_changes(
    providers: Control,
) -> None:
    batch = new_batch()
    run_to("batch", batch.pk, providers, {"completed"})
    sweep_payouts()
    btc = Payout.objects.get(client__reference="m1")
    providers.fail(
        path="/v2/exchange", method="POST", status=400, error="not_valid_address", message="bad"
    )
    step("payout", btc.pk)
    result = sweep_payouts()
    assert result["created"] == 0
    assert result["skipped"] == [
        {"client": "m1", "reason": "last_payout_refused:not_valid_address"}
    ]
    assert Payout.objects.filter(client__reference="m1").count() == 1


def test_a_nonce_our_books_already_used_is_never_signed_again(providers: Control) -> None:
    earlier = new_batch()
    run_to("batch", earlier.pk, providers, {"completed"})
    used = Transfer.objects.get(batch=earlier)
    providers.post("/_sandbox/reset")  # a node that forgot its history: nonce back to 0
    ClientFactory(reference="late")
    credit("late", 2)
    batch = ConversionBatch.objects.get(pk=conversion_sweep(actor=ACTOR).batch_id)
    step("batch", batch.pk)
    assert step("batch", batch.pk).to_state == "needs_attention"
    batch.refresh_from_db()
    assert f"nonce {used.nonce}" in batch.last_error and "refusing to sign" in batch.last_error
    assert not Transfer.objects.filter(batch=batch).exclude(state="intent").exists()


def test_one_failing_order_does_not_stop_the_others(
    providers: Control, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = new_batch()
    ClientFactory(reference="other")
    credit("other", 2)
    second = ConversionBatch.objects.get(pk=conversion_sweep(actor=ACTOR).batch_id)
    real = engine._STEPS["reserved"]

    def broken_for_first(kind, order, actor):  # noqa: ANN001, ANN202
        if order.pk == first.pk:
            raise RuntimeError("boom")
        return real(kind, order, actor)

    monkeypatch.setitem(engine._STEPS, "reserved", broken_for_first)
    with pytest.raises(engine.AdvanceErrors, match=f"batch {first.pk}: RuntimeError: boom"):
        engine.orders_advance_all(actor=ACTOR)
    second.refresh_from_db()
    assert second.state == "exchange_created"
