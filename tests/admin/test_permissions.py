"""Roles: every persona can read every page; actions are hidden without their permission and
a forged POST for one is refused with 403, changing nothing."""

from __future__ import annotations

import pytest
from django.test import Client as HttpClient
from django.urls import reverse

from batches.models import ConversionBatch
from payouts.models import Accumulation, AuditEvent, RuntimeSettings
from payouts.services import runtime_settings_get
from tests.admin.conftest import World, credit, sweep
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db

LISTS = [
    "payouts_client",
    "payouts_accumulation",
    "payouts_payout",
    "payouts_auditevent",
    "payouts_exchangeattempt",
    "payouts_transfer",
    "batches_conversionbatch",
    "backoffice_webhookevent",
]


def changelist(name: str) -> str:
    return reverse(f"admin:{name}_changelist")


def force_close_post(batch: ConversionBatch, reason: str = "forged") -> dict[str, object]:
    return {
        "action": "force_close",
        "_selected_action": [str(batch.pk)],
        "confirm": "yes",
        "reason": reason,
    }


@pytest.mark.parametrize("persona", ["viewer", "operator", "approver"])
def test_every_persona_can_open_the_dashboard_and_every_page(
    persona: str, world: World, request: pytest.FixtureRequest
) -> None:
    http: HttpClient = request.getfixturevalue(f"as_{persona}")
    assert http.get(reverse("admin:index")).status_code == 200
    for name in LISTS:
        assert http.get(changelist(name)).status_code == 200, name
    batch_page = reverse("admin:batches_conversionbatch_change", args=[world.completed.pk])
    client_page = reverse("admin:payouts_client_change", args=[world.alpha.pk])
    row_page = reverse("admin:payouts_accumulation_change", args=[world.pending.pk])
    for url in (batch_page, client_page, row_page):
        assert http.get(url).status_code == 200, url
    settings_page = reverse("admin:payouts_runtimesettings_change", args=[1])
    assert http.get(settings_page).status_code == 200


def test_a_viewer_sees_no_action_anywhere(as_viewer: HttpClient, db: object) -> None:
    client = ClientFactory()
    credit(client)
    batch = sweep()
    page = as_viewer.get(changelist("batches_conversionbatch")).content.decode()
    assert 'name="action"' not in page
    assert "Export CSV" not in page
    batch_page = as_viewer.get(
        reverse("admin:batches_conversionbatch_change", args=[batch.pk])
    ).content.decode()
    assert "data-action=" not in batch_page
    dashboard = as_viewer.get(reverse("admin:index")).content.decode()
    assert "/switch/" not in dashboard


def test_an_operator_may_ask_for_actions_on_money_but_never_decide_them(
    as_operator: HttpClient, db: object
) -> None:
    page = as_operator.get(changelist("batches_conversionbatch")).content.decode()
    # Force-close and force-complete only record a request under dual control.
    for name in ("sync_now", "retry_step", "export_csv", "force_close", "force_complete"):
        assert f'value="{name}"' in page
    requests = as_operator.get(changelist("payouts_approvalrequest")).content.decode()
    for name in ("approve_requests", "reject_requests"):
        assert f'value="{name}"' not in requests


def test_an_approver_sees_every_order_action(as_approver: HttpClient, db: object) -> None:
    page = as_approver.get(changelist("batches_conversionbatch")).content.decode()
    for name in ("sync_now", "retry_step", "force_close", "force_complete", "export_csv"):
        assert f'value="{name}"' in page


@pytest.mark.parametrize("persona", ["viewer"])
def test_a_forged_force_close_is_refused_with_403_and_changes_nothing(
    persona: str, request: pytest.FixtureRequest, db: object
) -> None:
    http: HttpClient = request.getfixturevalue(f"as_{persona}")
    client = ClientFactory()
    credit(client, n=2)
    batch = sweep()
    audit_before = AuditEvent.objects.count()
    response = http.post(changelist("batches_conversionbatch"), force_close_post(batch))
    assert response.status_code == 403
    batch.refresh_from_db()
    assert batch.state == "reserved"
    assert Accumulation.objects.filter(batch=batch, state="converting").count() == 2
    assert AuditEvent.objects.count() == audit_before


def test_a_forged_sync_by_a_viewer_is_refused(as_viewer: HttpClient, db: object) -> None:
    client = ClientFactory()
    credit(client)
    batch = sweep()
    post = {"action": "sync_now", "_selected_action": [str(batch.pk)], "confirm": "yes"}
    assert as_viewer.post(changelist("batches_conversionbatch"), post).status_code == 403


def test_a_forged_settings_change_or_pause_by_an_operator_is_refused(
    as_operator: HttpClient, db: object
) -> None:
    runtime_settings_get()
    page = reverse("admin:payouts_runtimesettings_change", args=[1])
    post = {"conversion_threshold_usd": "1", "reason": "forged"}
    assert as_operator.post(page, post).status_code == 403
    switch = reverse("admin:payouts_runtimesettings_switch", args=["payouts_paused", "on"])
    assert as_operator.get(switch).status_code == 403
    assert as_operator.post(switch, {"reason": "forged"}).status_code == 403
    row = RuntimeSettings.objects.get()
    assert row.conversion_threshold_usd == 20 and not row.payouts_paused
    assert not AuditEvent.objects.filter(object_type="runtimesettings").exists()


def test_a_viewer_cannot_export_even_with_a_forged_request(
    as_viewer: HttpClient, world: World
) -> None:
    export = reverse("admin:payouts_accumulation_export")
    assert as_viewer.get(export).status_code == 403
    post = {"action": "export_csv", "_selected_action": [str(world.pending.pk)], "index": "0"}
    assert as_viewer.post(changelist("payouts_accumulation"), post).status_code == 403


def test_nobody_adds_edits_or_deletes_money_rows_in_admin(
    as_approver: HttpClient, world: World
) -> None:
    assert as_approver.get(reverse("admin:payouts_accumulation_add")).status_code == 403
    delete = reverse("admin:batches_conversionbatch_delete", args=[world.completed.pk])
    assert as_approver.post(delete, {"post": "yes"}).status_code == 403
    row_page = reverse("admin:payouts_accumulation_change", args=[world.pending.pk])
    response = as_approver.post(row_page, {"state": "paid", "usdt": "1000"})
    assert response.status_code == 403
    world.pending.refresh_from_db()
    assert world.pending.state == "pending" and world.pending.usdt is None


def test_not_even_a_superuser_edits_a_money_row_through_a_form(
    admin_client: HttpClient, world: World
) -> None:
    row_page = reverse("admin:payouts_accumulation_change", args=[world.pending.pk])
    assert admin_client.get(row_page).status_code == 200
    assert admin_client.post(row_page, {"state": "paid"}).status_code == 403
    batch_page = reverse("admin:batches_conversionbatch_change", args=[world.completed.pk])
    assert admin_client.post(batch_page, {"state": "failed"}).status_code == 403
    world.completed.refresh_from_db()
    assert world.completed.state == "completed"


def decide_post(request_id: int, action: str = "approve_requests") -> dict[str, object]:
    return {
        "action": action,
        "_selected_action": [str(request_id)],
        "confirm": "yes",
        "reason": "forged",
    }


@pytest.mark.parametrize("who", ["viewer", "operator", "requester"])
@pytest.mark.parametrize("action", ["approve_requests", "reject_requests"])
def test_a_forged_decision_by_the_wrong_person_is_403_and_changes_nothing(
    who: str, action: str, request: pytest.FixtureRequest, approver: object, db: object
) -> None:
    from payouts.approvals import approval_request
    from payouts.models import ApprovalRequest

    client = ClientFactory()
    credit(client, n=2)
    batch = sweep()
    req = approval_request(
        action="force_close", kind="batch", order_id=batch.pk, reason="stuck", user=approver
    )
    http: HttpClient = request.getfixturevalue("as_approver" if who == "requester" else f"as_{who}")
    audit_before = AuditEvent.objects.count()
    response = http.post(changelist("payouts_approvalrequest"), decide_post(req.pk, action))
    assert response.status_code == 403
    assert ApprovalRequest.objects.get(pk=req.pk).state == "pending"
    batch.refresh_from_db()
    assert batch.state == "reserved"
    assert AuditEvent.objects.count() == audit_before
