"""Confirmed actions: a confirmation page that says exactly what will happen, a required
reason where money or state changes, the service doing the work (audited), and a report of
what was done and what was skipped, and why."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client as HttpClient
from django.urls import reverse

from backoffice.models import WebhookEvent
from batches.models import ConversionBatch
from payouts.models import (
    Accumulation,
    ApprovalRequest,
    AuditEvent,
    Payout,
    RuntimeSettings,
    Transfer,
)
from payouts.services import runtime_settings_get
from tests.admin.conftest import SYSTEM, World, credit, messages_of, sweep
from tests.conftest import Control
from tests.factories import BatchFactory, ClientFactory, PayoutFactory
from tests.payouts.test_engine import new_batch, step

pytestmark = pytest.mark.django_db
BATCHES = "admin:batches_conversionbatch_changelist"


def act(http: HttpClient, name: str, orders: list[object], url: str = BATCHES, **extra: object):  # noqa: ANN201
    """POST an action as the admin's list page does (first step: the confirmation)."""
    data: dict[str, object] = {
        "action": name,
        "_selected_action": [str(o.pk) for o in orders],  # type: ignore[attr-defined]
        "index": "0",
    }
    data.update(extra)
    return http.post(reverse(url), data, follow=True)


def confirm(http: HttpClient, name: str, orders: list[object], url: str = BATCHES, **extra: object):  # noqa: ANN201
    data: dict[str, object] = {
        "action": name,
        "_selected_action": [str(o.pk) for o in orders],  # type: ignore[attr-defined]
        "confirm": "yes",
    }
    data.update(extra)
    return http.post(reverse(url), data, follow=True)


REQUESTS = "admin:payouts_approvalrequest_changelist"


def approve_pending(http: HttpClient, reason: str = "checked, go ahead") -> str:
    """Another approver approves every pending request (dual control's second step)."""
    pending = list(ApprovalRequest.objects.filter(state="pending"))
    assert pending, "no request waits for a decision"
    return " ".join(
        messages_of(confirm(http, "approve_requests", pending, url=REQUESTS, reason=reason))
    )


@pytest.fixture
def reserved_batch(db: object) -> ConversionBatch:
    client = ClientFactory(reference="rho")
    credit(client, eth="0.02", usd="61.50", n=3)
    return sweep()


def test_force_close_first_shows_exactly_what_will_happen_and_changes_nothing(
    as_approver: HttpClient, reserved_batch: ConversionBatch
) -> None:
    response = act(as_approver, "force_close", [reserved_batch])
    page = response.content.decode()
    assert response.status_code == 200
    assert "Force-close: are you sure?" in page
    assert "releases its 3 rows to pending" in page and "no funds left" in page
    assert 'name="reason"' in page and 'name="write_off"' in page
    reserved_batch.refresh_from_db()
    assert reserved_batch.state == "reserved"
    assert not AuditEvent.objects.filter(kind="force_close_requested").exists()


def test_force_close_without_a_reason_is_refused_on_the_page(
    as_approver: HttpClient, reserved_batch: ConversionBatch
) -> None:
    response = confirm(as_approver, "force_close", [reserved_batch], reason="  ")
    assert "A reason is required" in response.content.decode()
    reserved_batch.refresh_from_db()
    assert reserved_batch.state == "reserved"


def test_force_close_releases_the_rows_and_records_who_and_why(
    as_approver: HttpClient,
    as_second_approver: HttpClient,
    second_approver: object,
    reserved_batch: ConversionBatch,
) -> None:
    response = confirm(
        as_approver, "force_close", [reserved_batch], reason="ChangeNOW refunded, tx 0xabc"
    )
    assert "Force-close: 1 done, 0 skipped." in " ".join(messages_of(response))
    assert "waits for another approver" in " ".join(messages_of(response))
    reserved_batch.refresh_from_db()
    assert reserved_batch.state == "reserved"  # asked for, not done
    assert "1 done, 0 skipped" in approve_pending(as_second_approver, reason="verified")
    reserved_batch.refresh_from_db()
    assert reserved_batch.state == "force_closed"
    assert Accumulation.objects.filter(state="pending", batch__isnull=True).count() == 3
    event = AuditEvent.objects.get(
        object_type="conversionbatch", object_id=str(reserved_batch.pk), to_state="force_closed"
    )
    assert event.actor == "user:approver-two" and event.user == second_approver
    assert event.reason == ("verified (asked by user:approver-user: ChangeNOW refunded, tx 0xabc)")
    # The order's page shows the audit trail, the request included.
    page = as_approver.get(
        reverse("admin:batches_conversionbatch_change", args=[reserved_batch.pk])
    ).content.decode()
    assert "ChangeNOW refunded, tx 0xabc" in page


def test_force_close_can_write_the_rows_off(
    as_approver: HttpClient, as_second_approver: HttpClient, reserved_batch: ConversionBatch
) -> None:
    confirm(as_approver, "force_close", [reserved_batch], reason="fraud", write_off="on")
    approve_pending(as_second_approver)
    assert set(Accumulation.objects.values_list("state", flat=True)) == {"written_off"}


def test_it_reports_done_and_skipped_orders_with_the_reason(
    as_approver: HttpClient, world: World, reserved_batch: ConversionBatch
) -> None:
    response = confirm(
        as_approver, "force_close", [world.completed, reserved_batch], reason="cleanup"
    )
    text = " ".join(messages_of(response))
    assert "Force-close: 1 done, 1 skipped." in text
    assert f"Skipped batch {str(world.completed.pk)[:8]}: refused now: the order is already " in (
        text
    )
    world.completed.refresh_from_db()
    assert world.completed.state == "completed"


def test_force_close_is_refused_while_a_broadcast_transaction_could_confirm(
    as_approver: HttpClient, as_second_approver: HttpClient, providers: Control
) -> None:
    providers.config(auto_mine=False)  # the deposit waits in the mempool
    batch = new_batch()
    step("batch", batch.pk)
    step("batch", batch.pk)
    pending = Transfer.objects.get(batch=batch)
    assert pending.state == "broadcast"
    page = act(as_approver, "force_close", [batch]).content.decode()
    assert f"transaction {pending.tx_hash} (nonce 0) is broadcast and could" in page
    refused = confirm(as_approver, "force_close", [batch], reason="stuck")
    assert "could still be mined" in " ".join(messages_of(refused))
    batch.refresh_from_db()
    assert batch.state == "funds_sent"
    # The way out the page names: cancel the transfer, let the cancel mine, then release.
    done = confirm(as_approver, "cancel_transfer", [batch], reason="stuck in the mempool")
    assert "Cancel the transfer: 1 done" in " ".join(messages_of(done))
    assert "executed: " in approve_pending(as_second_approver)
    providers.post("/_sandbox/mine", {"count": 2})
    confirm(as_approver, "force_close", [batch], reason="cancel mined")
    approve_pending(as_second_approver)
    batch.refresh_from_db()
    assert batch.state == "force_closed"
    assert Transfer.objects.get(batch=batch).state == "cancelled"
    assert Accumulation.objects.filter(state="pending", batch__isnull=True).count() == 4
    assert providers.state()["deposits"] == []


def test_force_closing_a_payout_returns_its_rows_to_converted(
    as_approver: HttpClient, as_second_approver: HttpClient, world: World
) -> None:
    from payouts.limits import PairRange
    from payouts.payout_sweep import payout_sweep

    result = payout_sweep(
        actor=SYSTEM, range_for=lambda currency, network: PairRange(Decimal(0), None)
    )
    assert result.created == 2
    payout = Payout.objects.get(client=world.alpha)
    page = act(as_approver, "force_close", [payout], url="admin:payouts_payout_changelist")
    assert "releases its 2 rows to converted" in page.content.decode()
    assert "BTC on btc" in page.content.decode()
    confirm(
        as_approver,
        "force_close",
        [payout],
        url="admin:payouts_payout_changelist",
        reason="address typo, client asked to wait",
    )
    approve_pending(as_second_approver)
    payout.refresh_from_db()
    assert payout.state == "force_closed"
    assert Accumulation.objects.filter(client=world.alpha, state="converted").count() == 2


def test_retry_is_refused_with_the_reason_when_no_exchange_exists(
    as_operator: HttpClient, db: object
) -> None:
    batch = BatchFactory(state="needs_attention", exchange_id="", payin_address="")
    response = confirm(as_operator, "retry_step", [batch], reason="signer is back")
    text = " ".join(messages_of(response))
    assert "Retry the step: 0 done, 1 skipped." in text
    assert "no exchange was created for this order" in text


def test_sync_now_takes_the_next_step_through_the_provider(
    as_operator: HttpClient, providers: Control
) -> None:
    batch = new_batch()
    page = act(as_operator, "sync_now", [batch]).content.decode()
    assert "Runs the next step now: creates the ChangeNOW exchange." in page
    response = confirm(as_operator, "sync_now", [batch])
    assert "Sync now: 1 done, 0 skipped." in " ".join(messages_of(response))
    batch.refresh_from_db()
    assert batch.state == "exchange_created" and batch.exchange_id
    assert AuditEvent.objects.filter(kind="synced", actor="user:operator-user").exists()


def test_force_complete_needs_a_finished_exchange_read_live(
    as_approver: HttpClient, as_second_approver: HttpClient, providers: Control
) -> None:
    batch = new_batch()
    step("batch", batch.pk)
    step("batch", batch.pk)
    batch.refresh_from_db()
    providers.script(batch.exchange_id, outcome="stuck", status="exchanging")
    providers.advance(60)
    asked = confirm(as_approver, "force_complete", [batch], reason="support says done")
    assert "waits for another approver" in " ".join(messages_of(asked))
    # Read live when it runs: the exchange is not finished, so nothing is completed.
    decided = approve_pending(as_second_approver)
    assert "refused at execution" in decided
    assert "only a finished exchange can be completed" in decided
    providers.script(batch.exchange_id, outcome="finished")
    providers.advance(60)
    done = confirm(as_approver, "force_complete", [batch], reason="support says done")
    assert "Force-complete: 1 done, 0 skipped." in " ".join(messages_of(done))
    assert "executed: " in approve_pending(as_second_approver)
    batch.refresh_from_db()
    assert batch.state == "completed"


def test_resolving_an_unmatched_payment_shows_the_client_before_crediting_once(
    as_operator: HttpClient, db: object
) -> None:
    import json

    client = ClientFactory(reference="delta", name="Delta Games")
    body = {
        "payment_id": "777001",
        "payment_status": "finished",
        "order_id": "typo:inv-1",
        "outcome_amount": "0.0123",
        "outcome_currency": "eth",
        "price_amount": "37.10",
        "price_currency": "usd",
    }
    event = WebhookEvent.objects.create(
        provider="nowpayments",
        event_id="777001:finished",
        signature_valid=True,
        outcome="unmatched",
        reason="unknown_client: typo",
        body=json.dumps(body),
        payment_id="777001",
        reference="typo:inv-1",
    )
    url = "admin:backoffice_webhookevent_changelist"
    first = act(as_operator, "resolve_events", [event], url=url).content.decode()
    assert "0.0123 ETH (price 37.10 USD)" in first and 'name="client_reference"' in first
    review = confirm(
        as_operator,
        "resolve_events",
        [event],
        url=url,
        client_reference="delta",
        reason="merchant confirmed by email",
    )
    page = review.content.decode()
    assert "Credits 0.0123 ETH worth $37.10 to delta (Delta Games), platform fee 3 %" in page
    assert not Accumulation.objects.exists()
    done = confirm(
        as_operator,
        "resolve_events",
        [event],
        url=url,
        client_reference="delta",
        reviewed_client="delta",
        reason="merchant confirmed by email",
    )
    assert "1 done, 0 skipped" in " ".join(messages_of(done))
    row = Accumulation.objects.get()
    assert (row.client, row.eth, row.usd) == (client, Decimal("0.0123"), Decimal("37.10"))
    again = confirm(
        as_operator,
        "resolve_events",
        [event],
        url=url,
        client_reference="delta",
        reviewed_client="delta",
        reason="again",
    )
    assert "0 done, 1 skipped" in " ".join(messages_of(again))
    assert Accumulation.objects.count() == 1


def test_pausing_conversions_needs_a_reason_and_is_audited(
    as_approver: HttpClient, as_second_approver: HttpClient, db: object
) -> None:
    runtime_settings_get()
    switch = reverse("admin:payouts_runtimesettings_switch", args=["conversions_paused", "on"])
    page = as_approver.get(switch).content.decode()
    assert "The conversion sweep will do nothing from its next run until resumed" in page
    refused = as_approver.post(switch, {"reason": ""})
    assert "A reason is required" in refused.content.decode()
    assert not RuntimeSettings.objects.get().conversions_paused
    as_approver.post(switch, {"reason": "ETH price crash, incident #12"})
    assert RuntimeSettings.objects.get().conversions_paused
    event = AuditEvent.objects.get(object_type="runtimesettings", kind="setting_changed")
    assert event.data == {"setting": "conversions_paused", "old": "False", "new": "True"}
    assert event.reason == "ETH price crash, incident #12"
    # Pausing is immediate; resuming moves money again and waits for another approver.
    resume = reverse("admin:payouts_runtimesettings_switch", args=["conversions_paused", "off"])
    as_approver.post(resume, {"reason": "incident over"})
    assert RuntimeSettings.objects.get().conversions_paused
    assert "executed: " in approve_pending(as_second_approver, reason="agreed, incident over")
    assert not RuntimeSettings.objects.get().conversions_paused
    resumed = AuditEvent.objects.filter(object_type="runtimesettings", kind="setting_changed")
    assert resumed.latest("id").actor == "user:approver-two"


def test_an_action_on_too_many_orders_at_once_does_nothing(
    as_approver: HttpClient, db: object
) -> None:
    payouts = PayoutFactory.create_batch(101, state="reserved")
    response = confirm(
        as_approver, "force_close", payouts, url="admin:payouts_payout_changelist", reason="bulk"
    )
    assert "select at most 100 at a time; nothing was done" in " ".join(messages_of(response))
    assert not Payout.objects.filter(state="force_closed").exists()
