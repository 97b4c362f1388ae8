"""Operator decisions: sync, retry, force-close, force-complete, resolve (services and the
shell commands that call them)."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import CommandError, call_command

from backoffice.models import Alert, WebhookEvent
from backoffice.reconcile import reconcile_run
from backoffice.services import ResolveError, webhook_event_resolve
from batches.models import ConversionBatch
from payouts import engine
from payouts.models import Accumulation, AuditEvent, Transfer
from payouts.operator import (
    OperatorError,
    order_force_close,
    order_force_complete,
    order_replace_transfer,
    order_retry,
    order_sync,
)
from payouts.transitions import Actor
from tests.backoffice.test_webhooks import ipn, post_ipn
from tests.conftest import Control
from tests.factories import ClientFactory
from tests.payouts.test_engine import new_batch, run_to, step

pytestmark = pytest.mark.django_db
OPS = Actor.system("operator-test")


def sent_batch(providers: Control) -> ConversionBatch:
    batch = new_batch()
    step("batch", batch.pk)
    step("batch", batch.pk)
    batch.refresh_from_db()
    assert batch.state == "funds_sent"
    return batch


def test_it_refuses_to_release_rows_while_the_deposit_could_still_confirm(
    providers: Control,
) -> None:
    providers.config(auto_mine=False)  # the deposit stays in the mempool
    batch = sent_batch(providers)
    deposit = Transfer.objects.get(batch=batch)
    with pytest.raises(OperatorError, match="could\\s+still be mined") as refused:
        order_force_close(kind="batch", order_id=batch.pk, actor=OPS, reason="stuck")
    assert deposit.tx_hash in str(refused.value) and "Cancel" in str(refused.value)
    batch.refresh_from_db()
    assert batch.state == "funds_sent"
    assert Accumulation.objects.filter(state="converting").count() == 4
    # The safe way out: cancel at the same nonce, let it mine, then release with proof.
    order_replace_transfer(kind="batch", order_id=batch.pk, actor=OPS, reason="stuck", cancel=True)
    providers.post("/_sandbox/mine", {"count": 2})
    result = order_force_close(kind="batch", order_id=batch.pk, actor=OPS, reason="cancelled")
    assert result.done and "4 rows released" in result.detail
    deposit.refresh_from_db()
    assert deposit.state == "cancelled"
    assert providers.state()["deposits"] == []
    # Mining more never brings the original back: only the cancel used the nonce.
    providers.post("/_sandbox/mine", {"count": 3})
    chain = {t["hash"]: t for t in providers.state()["transactions"]}
    assert chain[deposit.txs.get(kind="original").tx_hash]["block"] is None
    assert Accumulation.objects.filter(state="pending", batch__isnull=True).count() == 4


def test_force_close_can_write_rows_off(providers: Control) -> None:
    batch = new_batch()
    order_force_close(kind="batch", order_id=batch.pk, actor=OPS, reason="fraud", write_off=True)
    assert set(Accumulation.objects.values_list("state", flat=True)) == {"written_off"}
    assert reconcile_run()["ok"]


def test_force_close_needs_a_reason_and_an_open_order(providers: Control) -> None:
    batch = new_batch()
    with pytest.raises(OperatorError, match="reason"):
        order_force_close(kind="batch", order_id=batch.pk, actor=OPS, reason=" ")
    order_force_close(kind="batch", order_id=batch.pk, actor=OPS, reason="test")
    with pytest.raises(OperatorError, match="already force_closed"):
        order_force_close(kind="batch", order_id=batch.pk, actor=OPS, reason="again")


def test_force_complete_only_from_a_finished_exchange_read_live(providers: Control) -> None:
    batch = sent_batch(providers)
    providers.script(batch.exchange_id, outcome="stuck", status="exchanging")
    providers.advance(60)
    with pytest.raises(OperatorError, match="only a finished exchange"):
        order_force_complete(kind="batch", order_id=batch.pk, actor=OPS, reason="support says done")
    providers.script(batch.exchange_id, outcome="finished")
    providers.advance(60)
    result = order_force_complete(
        kind="batch", order_id=batch.pk, actor=OPS, reason="support says done"
    )
    assert result.done
    batch.refresh_from_db()
    assert batch.state == "completed"
    assert reconcile_run()["ok"]


def test_retry_resumes_with_the_same_transfer_after_the_signer_was_down(
    providers: Control, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine, "MAX_RETRIES", 2)
    batch = new_batch()
    step("batch", batch.pk)
    providers.fail(path="/rpc", rpc_method="eth_sendRawTransaction", status=502, count=2)
    step("batch", batch.pk)
    step("batch", batch.pk)
    batch.refresh_from_db()
    # A signed transfer may be out there: the order is never given up, it keeps polling at
    # the cap and a person is alerted.
    assert batch.state == "exchange_created" and batch.next_attempt_at is not None
    assert Alert.objects.filter(kind="retry_cap", key__contains=str(batch.pk)).count() == 1
    signed = Transfer.objects.get(batch=batch)
    result = order_retry(kind="batch", order_id=batch.pk, actor=OPS, reason="signer is back")
    assert result.done and "exchange_created" in result.detail
    assert run_to("batch", batch.pk, providers, {"completed"}) == "completed"
    assert list(Transfer.objects.filter(batch=batch).values_list("tx_hash", flat=True)) == [
        signed.tx_hash
    ]
    assert len(providers.state()["deposits"]) == 1


def test_sync_of_an_order_needing_attention_only_records_the_status(providers: Control) -> None:
    batch = sent_batch(providers)
    providers.script(batch.exchange_id, outcome="refunded")
    run_to("batch", batch.pk, providers, {"needs_attention"})
    result = order_sync(kind="batch", order_id=batch.pk, actor=OPS)
    assert "ChangeNOW says refunded" in result.detail and "still needs_attention" in result.detail
    batch.refresh_from_db()
    assert batch.state == "needs_attention"
    assert AuditEvent.objects.filter(object_id=str(batch.pk), kind="synced").exists()


def test_sync_reports_what_changenow_said_with_its_amounts(providers: Control) -> None:
    from integrations.assets import format_amount

    batch = sent_batch(providers)
    providers.script(batch.exchange_id, outcome="stuck", status="exchanging")
    providers.advance(30)
    result = order_sync(kind="batch", order_id=batch.pk, actor=OPS)
    assert f"ChangeNOW says exchanging for exchange {batch.exchange_id}" in result.detail
    assert f"{format_amount(batch.eth_total)} ETH in" in result.detail
    assert "USDT" in result.detail  # what it expects to pay out
    assert "converting" in result.detail  # what changed here (or that nothing did)


def test_the_shell_commands_apply_the_same_rules(providers: Control) -> None:
    batch = new_batch()
    out = io.StringIO()
    call_command("sync", "batch", str(batch.pk), "--json", stdout=out)
    assert "reserved → exchange_created" in json.loads(out.getvalue())["detail"]
    with pytest.raises(CommandError, match="required"):
        call_command("force_close", "batch", str(batch.pk))
    out = io.StringIO()
    call_command("force_close", "batch", str(batch.pk), "--reason", "test", "--json", stdout=out)
    assert json.loads(out.getvalue())["done"] is True
    with pytest.raises(CommandError, match="already force_closed"):
        call_command("retry", "batch", str(batch.pk), "--reason", "x")


def test_an_unmatched_payment_is_resolved_to_a_client_once() -> None:
    post_ipn(ipn(order_id="typo-acme:INV-9"))
    event = WebhookEvent.objects.get(outcome="unmatched")
    ClientFactory(reference="acme")
    resolved = webhook_event_resolve(
        event_id=event.pk, client_reference="acme", actor=OPS, reason="merchant confirmed"
    )
    assert resolved.outcome == "resolved"
    acc = Accumulation.objects.get()
    assert (acc.client.reference, resolved.accumulation_id) == ("acme", acc.pk)
    with pytest.raises(ResolveError, match="not unmatched"):
        webhook_event_resolve(event_id=event.pk, client_reference="acme", actor=OPS, reason="x")
    assert Accumulation.objects.count() == 1


def test_an_event_in_another_currency_cannot_be_resolved_as_eth() -> None:
    ClientFactory(reference="acme")
    post_ipn(ipn(outcome_currency="btc"))
    event = WebhookEvent.objects.get(outcome="unmatched")
    with pytest.raises(ResolveError, match="outcome_currency"):
        webhook_event_resolve(event_id=event.pk, client_reference="acme", actor=OPS, reason="x")
    assert not Accumulation.objects.exists()
