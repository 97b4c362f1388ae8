"""Client pages: edits go through address validation and the audited upsert with a reason;
the page shows balances per state, recent activity and the destination history."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client as HttpClient
from django.urls import reverse

from payouts.models import AuditEvent, Client
from tests.admin.conftest import BTC, World

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalogue")]
NEW_BTC = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"


def edit(client: Client, **changes: Any) -> dict[str, Any]:
    data = {
        "name": client.name,
        "payout_strategy": client.payout_strategy,
        "payout_threshold_usd": str(client.payout_threshold_usd),
        "payout_currency": client.payout_currency,
        "payout_network": client.payout_network,
        "payout_address": client.payout_address,
        "payout_extra_id": client.payout_extra_id,
        "fee_percent": "" if client.fee_percent is None else str(client.fee_percent),
        "active": "on" if client.active else "",
        "reason": "",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v != "" or k in ("reason", "fee_percent")}


def test_a_destination_change_is_validated_approved_by_another_approver_and_audited(
    as_approver: HttpClient, as_second_approver: HttpClient, world: World
) -> None:
    from tests.admin.test_actions import approve_pending

    page = reverse("admin:payouts_client_change", args=[world.alpha.pk])
    response = as_approver.post(
        page, edit(world.alpha, payout_address=NEW_BTC, reason="merchant letter 2024-11-02")
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    world.alpha.refresh_from_db()
    assert world.alpha.payout_address == BTC  # waits for a second person
    assert "executed: " in approve_pending(as_second_approver, reason="called the merchant")
    world.alpha.refresh_from_db()
    assert world.alpha.payout_address == NEW_BTC
    event = AuditEvent.objects.get(object_type="client", kind="payout_destination_changed")
    assert event.data == {"payout_address": {"old": BTC, "new": NEW_BTC}}
    assert event.reason == (
        "called the merchant (asked by user:approver-user: merchant letter 2024-11-02)"
    )
    assert event.actor == "user:approver-two"
    html = as_approver.get(page).content.decode()
    assert f"payout_address: {BTC} → {NEW_BTC}" in html


def test_an_invalid_address_is_refused_and_nothing_changes(
    as_approver: HttpClient, world: World
) -> None:
    page = reverse("admin:payouts_client_change", args=[world.alpha.pk])
    response = as_approver.post(
        page, edit(world.alpha, payout_address="bc1qnotanaddress", reason="typo test")
    )
    assert response.status_code == 200
    assert "payout_address" in response.content.decode()
    world.alpha.refresh_from_db()
    assert world.alpha.payout_address == BTC
    assert (
        not AuditEvent.objects.filter(object_type="client").exclude(kind="client_created").exists()
    )


def test_a_change_needs_a_reason(as_approver: HttpClient, world: World) -> None:
    page = reverse("admin:payouts_client_change", args=[world.alpha.pk])
    response = as_approver.post(page, edit(world.alpha, name="Alpha Books Ltd"))
    assert "A reason is required to change a client." in response.content.decode()
    world.alpha.refresh_from_db()
    assert world.alpha.name == "Alpha Books"


def test_an_operator_cannot_change_a_client(as_operator: HttpClient, world: World) -> None:
    page = reverse("admin:payouts_client_change", args=[world.alpha.pk])
    response = as_operator.post(page, edit(world.alpha, payout_address=NEW_BTC, reason="x"))
    assert response.status_code == 403
    world.alpha.refresh_from_db()
    assert world.alpha.payout_address == BTC


def test_the_client_page_shows_balances_per_state_and_recent_activity(
    as_viewer: HttpClient, world: World
) -> None:
    html = as_viewer.get(reverse("admin:payouts_client_change", args=[world.alpha.pk])).content
    page = html.decode()
    # alpha: 2 converted rows (57.036 USDT) and 1 pending ($14.20)
    assert "57.036 USDT" in page and "$14.20" in page
    assert world.pending.payment_id in page
    assert 'id="destination-changes"' in page
    assert "The destination has not changed" in page


def test_the_client_list_shows_what_each_client_is_owed(
    as_viewer: HttpClient, world: World
) -> None:
    page = as_viewer.get(reverse("admin:payouts_client_changelist")).content.decode()
    assert ">57.036</a>" in page and ">28.518</a>" in page


def test_the_form_shows_every_problem_on_its_field_at_once_in_words(
    as_approver: HttpClient, world: World
) -> None:
    page = reverse("admin:payouts_client_change", args=[world.alpha.pk])
    response = as_approver.post(
        page,
        edit(
            world.alpha,
            payout_threshold_usd="-10",
            payout_address="bc1qnotanaddress",
            reason="two typos",
        ),
    )
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.errors["payout_threshold_usd"] == ["Threshold must be more than 0"]
    assert form.errors["payout_address"][0].startswith("Payout address:")
    html = response.content.decode()
    assert "Constraint" not in html and "client_strategy_threshold" not in html
    world.alpha.refresh_from_db()
    assert world.alpha.payout_threshold_usd == 50
