"""The back office in a real browser (Debian's chromium driven by Playwright) against a live
server: what each persona sees and can do, end to end."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User

from batches.models import ConversionBatch
from payouts.models import Accumulation, AuditEvent, RuntimeSettings
from tests.admin.conftest import World, credit, sweep
from tests.factories import BatchFactory, ClientFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.mark.parametrize("role", ["viewer", "operator", "approver"])
def test_each_persona_logs_in_and_lands_on_the_dashboard(
    role: str, login: Any, request: pytest.FixtureRequest
) -> None:
    user: User = request.getfixturevalue(role)
    page = login(user)
    assert page.title().startswith("Dashboard")
    assert page.inner_text("#pending h2").lower() == "pending conversion"
    assert f"{user.get_username()}".upper() in page.inner_text("#user-tools").upper()
    pause_buttons = page.locator("#pending a.bo-button").count()
    assert pause_buttons == (2 if role == "approver" else 0)


def test_the_dashboard_shows_the_figures_of_known_data(
    login: Any, viewer: User, world: World
) -> None:
    BatchFactory(state="needs_attention")
    page = login(viewer)
    assert page.inner_text('[data-figure="pending-usd"]') == "$14.20"
    assert page.inner_text('[data-figure="money-converted-usdt"]') == "85.554"
    assert page.inner_text('[data-figure="platform-usdt"]') == "2.646"
    attention = page.locator('[data-figure="attention-batches"]')
    assert attention.inner_text().startswith("1") and "bad" in attention.get_attribute("class")
    page.click('[data-figure="pending-usd"]')
    page.wait_for_selector("#result_list")
    assert "state__exact=pending" in page.url
    assert page.locator("#result_list tbody tr").count() == 1
    assert world.pending.payment_id in page.inner_text("#result_list")


def test_an_operator_asks_for_a_force_close_and_an_approver_approves_it(
    login: Any, operator: User, approver: User
) -> None:
    client = ClientFactory(reference="kappa")
    credit(client, eth="0.02", usd="61.50", n=3)
    batch = sweep()
    page = login(operator)
    base = page.url.split("/admin/")[0]
    page.goto(base + f"/admin/batches/conversionbatch/{batch.pk}/change/")
    page.click('button[data-action="force_close"]')
    assert "Force-close: are you sure?" in page.inner_text("#content")
    assert "releases its 3 rows to pending" in page.inner_text("#content")
    assert "Under dual control" in page.inner_text("#content")
    page.fill("#id_reason", "ChangeNOW refunded the deposit, ticket 4711")
    page.click("#confirm-action")
    page.wait_for_selector(".messagelist")
    assert "waits for another approver" in page.inner_text(".messagelist")
    batch.refresh_from_db()
    assert batch.state == "reserved"  # asked for, not done
    # The operator sees the request but cannot decide it.
    page.goto(base + "/admin/payouts/approvalrequest/")
    assert "pending" in page.inner_text("#result_list")
    assert page.locator('select[name="action"] option[value="approve_requests"]').count() == 0

    second = login(approver)
    second.goto(base + "/admin/payouts/approvalrequest/?state__exact=pending")
    second.check("#result_list input.action-select")
    second.select_option('select[name="action"]', "approve_requests")
    second.click('button[name="index"]')
    assert "Approve and run: are you sure?" in second.inner_text("#content")
    assert "ChangeNOW refunded the deposit, ticket 4711" in second.inner_text("#content")
    second.fill("#id_reason", "checked the refund on the explorer")
    second.click("#confirm-action")
    second.wait_for_selector(".messagelist")
    assert "Approve and run: 1 done, 0 skipped." in second.inner_text(".messagelist")
    second.goto(base + f"/admin/batches/conversionbatch/{batch.pk}/change/")
    assert "force_closed" in second.inner_text("#order-summary")
    trail = second.inner_text("#audit-timeline")
    assert "ChangeNOW refunded the deposit, ticket 4711" in trail
    assert "user:approver-user" in trail and "user:operator-user" in trail
    assert "No rows are linked any more" in second.inner_text("#rows-summary")
    batch.refresh_from_db()
    assert batch.state == "force_closed"
    assert Accumulation.objects.filter(state="pending", batch__isnull=True).count() == 3


def test_a_viewer_sees_no_action_and_a_forged_post_is_refused(
    login: Any, viewer: User, live_server: Any
) -> None:
    client = ClientFactory()
    credit(client, n=2)
    batch = sweep()
    page = login(viewer)
    page.goto(f"{live_server.url}/admin/batches/conversionbatch/")
    assert page.locator('select[name="action"]').count() == 0
    page.goto(f"{live_server.url}/admin/batches/conversionbatch/{batch.pk}/change/")
    assert page.locator("button[data-action]").count() == 0
    status = page.evaluate(
        """async (pk) => {
            const token = document.cookie.split('; ').find(c => c.startsWith('csrftoken='))
                .split('=')[1];
            const body = new URLSearchParams({action: 'force_close', _selected_action: pk,
                                              confirm: 'yes', reason: 'forged'});
            const r = await fetch('/admin/batches/conversionbatch/', {method: 'POST', body,
                headers: {'X-CSRFToken': token}});
            return r.status;
        }""",
        str(batch.pk),
    )
    assert status == 403
    batch.refresh_from_db()
    assert batch.state == "reserved"
    assert not AuditEvent.objects.filter(kind="force_close_requested").exists()


def test_an_operator_exports_the_filtered_list_to_csv(
    login: Any, operator: User, world: World, live_server: Any
) -> None:
    page = login(operator)
    page.goto(f"{live_server.url}/admin/payouts/accumulation/?state__exact=converted")
    with page.expect_download() as download_info:
        page.click("text=Export CSV")
    path = download_info.value.path()
    lines = open(path, encoding="utf-8").read().splitlines()  # noqa: SIM115
    assert lines[0].startswith("id,payment_id,order_id,client_reference,eth,usd")
    assert len(lines) == 4
    assert sorted(line.split(",")[3] for line in lines[1:]) == ["alpha", "alpha", "beta"]
    assert all(",28.518,converted," in line for line in lines[1:])


def test_an_approver_raises_the_threshold_and_the_change_is_audited(
    login: Any, approver: User, second_approver: User, live_server: Any
) -> None:
    page = login(approver)
    page.goto(f"{live_server.url}/admin/payouts/runtimesettings/")
    page.fill("#id_conversion_threshold_usd", "200")
    page.fill("#id_reason", "volume has grown (story 5)")
    page.click('input[value="Save settings"]')
    page.wait_for_selector(".messagelist")
    assert "waits for another approver" in page.inner_text(".messagelist")
    assert RuntimeSettings.objects.get().conversion_threshold_usd == 20
    second = login(second_approver)
    second.goto(f"{live_server.url}/admin/payouts/approvalrequest/?state__exact=pending")
    second.check("#result_list input.action-select")
    second.select_option('select[name="action"]', "approve_requests")
    second.click('button[name="index"]')
    assert "20" in second.inner_text("#content") and "200" in second.inner_text("#content")
    second.fill("#id_reason", "agreed in the weekly review")
    second.click("#confirm-action")
    second.wait_for_selector(".messagelist")
    second.goto(f"{live_server.url}/admin/payouts/runtimesettings/")
    history = second.inner_text("#settings-history")
    assert "conversion_threshold_usd" in history and "volume has grown (story 5)" in history
    row = RuntimeSettings.objects.get()
    assert row.conversion_threshold_usd == 200
    event = AuditEvent.objects.get(kind="setting_changed")
    assert event.actor == "user:approver-two" and event.data["setting"] == (
        "conversion_threshold_usd"
    )
    assert ConversionBatch.objects.count() == 0


def test_a_rejected_request_changes_nothing_and_a_large_payout_waits_for_release(
    login: Any, approver: User, second_approver: User
) -> None:
    from payouts.approvals import approval_request, payout_release_held
    from payouts.models import ApprovalRequest, Payout
    from payouts.services import runtime_settings_update
    from payouts.transitions import Actor
    from tests.factories import PayoutFactory

    client = ClientFactory(reference="lambda")
    credit(client, eth="0.02", usd="61.50", n=2)
    batch = sweep()
    approval_request(
        action="force_close", kind="batch", order_id=batch.pk, reason="looks stuck", user=approver
    )
    runtime_settings_update(
        changes={"dual_control_over_usdt": Decimal("100")}, actor=Actor.system("t"), reason="t"
    )
    big = PayoutFactory(state="reserved", usdt_amount=Decimal("250"))
    assert payout_release_held(payout=big)  # the system asks for its release

    page = login(second_approver)
    base = page.url.split("/admin/")[0]
    page.goto(base + "/admin/")
    assert page.inner_text('[data-figure="approvals"]').startswith("2")
    requests = base + "/admin/payouts/approvalrequest/"
    page.goto(requests + "?state__exact=pending&action__exact=force_close")
    page.check("#result_list input.action-select")
    page.select_option('select[name="action"]', "reject_requests")
    page.click('button[name="index"]')
    page.fill("#id_reason", "support confirms it is moving")
    page.click("#confirm-action")
    page.wait_for_selector(".messagelist")
    assert "Reject: 1 done, 0 skipped." in page.inner_text(".messagelist")
    batch.refresh_from_db()
    assert batch.state == "reserved"
    page.goto(requests + "?action__exact=release_payout")
    assert "release a large payout" in page.inner_text("#result_list")
    assert "system:payout_sweep" in page.inner_text("#result_list")
    big.refresh_from_db()
    assert big.state == "reserved"
    assert ApprovalRequest.objects.get(action="release_payout").state == "pending"
    assert Payout.objects.get(pk=big.pk).state == "reserved"
