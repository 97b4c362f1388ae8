"""Dual control: one person asks, another approver decides; the action is re-checked when it
runs; nobody decides their own request; stale requests expire; large payouts wait."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from payouts.approvals import (
    ApprovalError,
    NotAllowed,
    approval_approve,
    approval_reject,
    approval_request,
    approvals_expire,
)
from payouts.models import Accumulation, ApprovalRequest, AuditEvent, Payout
from payouts.services import runtime_settings_update
from payouts.tasks import sweep_payouts
from payouts.transitions import Actor
from tests.conftest import Control
from tests.ledger.test_reconcile import completed_batch
from tests.payouts.test_engine import new_batch, run_to, step
from tests.personas import persona

pytestmark = pytest.mark.django_db


@pytest.fixture
def second_approver(db):  # noqa: ANN001, ANN201
    return persona("approver", name="approver-two")


def ask_close(batch, user, **options):  # noqa: ANN001, ANN201
    return approval_request(
        action="force_close",
        kind="batch",
        order_id=batch.pk,
        reason="exchange never answered",
        user=user,
        options=options,
    )


def test_an_operator_asks_and_another_approver_closes_the_batch(
    providers: Control,
    operator,
    approver,  # noqa: ANN001
) -> None:
    batch = new_batch()
    req = ask_close(batch, operator)
    assert req.state == "pending" and "releases its" in req.plan
    batch.refresh_from_db()
    assert batch.state == "reserved"  # nothing happens until someone else approves
    with pytest.raises(NotAllowed, match="only an approver"):
        approval_approve(request_id=req.pk, user=operator, reason="me")
    done = approval_approve(request_id=req.pk, user=approver, reason="checked the chain")
    assert done.state == "executed", done.result
    assert done.decided_by == approver
    batch.refresh_from_db()
    assert batch.state == "force_closed"
    assert not Accumulation.objects.filter(batch_id=batch.pk).exists()  # released
    kinds = list(
        AuditEvent.objects.filter(object_type="approvalrequest", object_id=str(req.pk))
        .order_by("id")
        .values_list("kind", flat=True)
    )
    assert kinds == ["approval_requested", "approval_approved", "approval_executed"]


def test_nobody_approves_their_own_request(
    providers: Control,
    approver,
    second_approver,  # noqa: ANN001
) -> None:
    batch = new_batch()
    req = ask_close(batch, approver)
    with pytest.raises(NotAllowed, match="another approver"):
        approval_approve(request_id=req.pk, user=approver, reason="mine")
    with pytest.raises(NotAllowed, match="another approver"):
        approval_reject(request_id=req.pk, user=approver, reason="mine")
    assert ApprovalRequest.objects.get(pk=req.pk).state == "pending"
    # The database refuses it too, whatever the code path.
    with pytest.raises(IntegrityError), transaction.atomic():
        ApprovalRequest.objects.filter(pk=req.pk).update(
            state="executed", decided_by=approver, decided_at=timezone.now()
        )
    assert approval_approve(request_id=req.pk, user=second_approver, reason="ok").state == (
        "executed"
    )


def test_a_rejected_or_expired_request_changes_nothing(
    providers: Control,
    operator,
    approver,  # noqa: ANN001
) -> None:
    batch = new_batch()
    rejected = approval_reject(
        request_id=ask_close(batch, operator).pk, user=approver, reason="wait for support"
    )
    assert rejected.state == "rejected"
    with pytest.raises(ApprovalError, match="already rejected"):
        approval_approve(request_id=rejected.pk, user=approver, reason="changed my mind")
    stale = ask_close(batch, operator)
    later = time_machine.travel(timezone.now() + timedelta(hours=25))
    with later, pytest.raises(ApprovalError, match="expired"):
        approval_approve(request_id=stale.pk, user=approver, reason="late")
    assert ApprovalRequest.objects.get(pk=stale.pk).state == "expired"
    batch.refresh_from_db()
    assert batch.state == "reserved"
    fresh = ask_close(batch, operator)
    with time_machine.travel(timezone.now() + timedelta(hours=25)):
        assert approvals_expire() == 1
    assert ApprovalRequest.objects.get(pk=fresh.pk).state == "expired"


def test_one_request_per_action_and_order_waits_at_a_time(
    providers: Control,
    operator,  # noqa: ANN001
) -> None:
    batch = new_batch()
    ask_close(batch, operator)
    with pytest.raises(ApprovalError, match="already waiting"):
        ask_close(batch, operator, write_off=True)


def test_an_action_refused_now_cannot_be_asked_for(
    providers: Control,
    operator,  # noqa: ANN001
) -> None:
    batch = completed_batch(providers)
    with pytest.raises(ApprovalError, match="already completed"):
        ask_close(batch, operator)
    assert not ApprovalRequest.objects.exists()


def test_the_action_is_checked_again_when_it_runs(
    providers: Control,
    operator,
    approver,  # noqa: ANN001
) -> None:
    batch = new_batch()
    req = ask_close(batch, operator)  # allowed now: nothing was sent
    step("batch", batch.pk)
    step("batch", batch.pk)  # meanwhile the engine sent the deposit
    done = approval_approve(request_id=req.pk, user=approver, reason="approved")
    assert done.state == "failed" and "refused at execution" in done.result
    batch.refresh_from_db()
    assert batch.state == "funds_sent"
    assert Accumulation.objects.filter(batch_id=batch.pk, state="converting").exists()


@pytest.mark.django_db(transaction=True)
def test_two_approvers_at_once_execute_it_once(
    providers: Control,
    operator,
    approver,
    second_approver,  # noqa: ANN001
) -> None:
    batch = new_batch()
    req = ask_close(batch, operator)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def approve(user) -> None:  # noqa: ANN001
        try:
            barrier.wait(timeout=10)
            outcomes.append(approval_approve(request_id=req.pk, user=user, reason="go").state)
        except ApprovalError as exc:
            outcomes.append(str(exc))
        finally:
            connection.close()

    threads = [threading.Thread(target=approve, args=(u,)) for u in (approver, second_approver)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["executed", "the request is already failed"] or sorted(
        outcomes
    ) == ["executed", "the request is already executed"], outcomes
    closes = AuditEvent.objects.filter(
        object_id=str(batch.pk), kind="transition", to_state="force_closed"
    )
    assert closes.count() == 1


def test_a_large_payout_waits_in_reserved_until_a_second_person_releases_it(
    providers: Control,
    approver,  # noqa: ANN001
) -> None:
    runtime_settings_update(
        changes={"dual_control_over_usdt": Decimal("1")}, actor=Actor.system("tests"), reason="t"
    )
    completed_batch(providers)
    sweep_payouts()
    payout = Payout.objects.filter(currency="usdt").get()
    for _ in range(3):
        step("payout", payout.pk)
    payout.refresh_from_db()
    assert payout.state == "reserved"
    (req,) = ApprovalRequest.objects.filter(action="release_payout", target_id=str(payout.pk))
    assert req.requested_by is None and req.state == "pending"
    assert approval_approve(request_id=req.pk, user=approver, reason="known client").state == (
        "executed"
    )
    assert run_to("payout", payout.pk, providers, {"completed"}) == "completed"


def test_a_fee_change_waits_for_a_second_approver_and_an_operator_cannot_ask(
    operator,
    approver,
    second_approver,  # noqa: ANN001
) -> None:
    from payouts.approvals import settings_change_request
    from payouts.models import RuntimeSettings
    from payouts.services import runtime_settings_get

    before = runtime_settings_get().platform_fee_percent
    assert before == Decimal(3)
    with pytest.raises(NotAllowed):
        settings_change_request(
            changes={"platform_fee_percent": "5"}, reason="pricing", user=operator
        )
    req = settings_change_request(
        changes={"platform_fee_percent": "5"}, reason="new pricing", user=approver
    )
    assert "platform fee percent: 3.0000 → 5" in req.plan
    assert RuntimeSettings.objects.get().platform_fee_percent == before
    with pytest.raises(NotAllowed):
        approval_approve(request_id=req.pk, user=approver, reason="mine")
    done = approval_approve(request_id=req.pk, user=second_approver, reason="board agreed")
    assert done.state == "executed"
    assert RuntimeSettings.objects.get().platform_fee_percent == Decimal(5)
    with pytest.raises(ApprovalError, match="platform_fee_percent"):
        settings_change_request(
            changes={"platform_fee_percent": "500"}, reason="typo", user=approver
        )


def test_a_client_destination_change_is_asked_and_run_by_another_approver(
    catalogue,
    operator,
    approver,
    second_approver,  # noqa: ANN001
) -> None:
    from payouts.approvals import client_destination_request
    from payouts.models import Client
    from tests.factories import ClientFactory

    client = ClientFactory(
        reference="dest-co",
        payout_currency="btc",
        payout_network="btc",
        payout_address="bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
    )
    new = {"payout_address": "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"}
    with pytest.raises(NotAllowed):
        client_destination_request(client=client, changes=new, reason="letter", user=operator)
    req = client_destination_request(client=client, changes=new, reason="letter", user=approver)
    assert "instead of btc btc bc1qar0" in req.plan
    assert Client.objects.get(pk=client.pk).payout_address.startswith("bc1qar0")
    done = approval_approve(request_id=req.pk, user=second_approver, reason="called them")
    assert done.state == "executed"
    assert Client.objects.get(pk=client.pk).payout_address == new["payout_address"]
    # An address that no longer validates when it runs is refused then.
    bad = client_destination_request(
        client=client, changes={"payout_address": "bc1qnotanaddress"}, reason="x", user=approver
    )
    assert approval_approve(request_id=bad.pk, user=second_approver, reason="ok").state == (
        "failed"
    )
    assert Client.objects.get(pk=client.pk).payout_address == new["payout_address"]
