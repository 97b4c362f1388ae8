"""Why a client's converted USDT is not paid, as finance sees it: the client page, the
clients list and the dashboard's owed panel; and the currency catalogue's page."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client as HttpClient
from django.urls import reverse

from payouts.limits import PairRange
from payouts.models import Client, Currency
from payouts.payout_sweep import payout_sweep
from payouts.transitions import Actor
from tests.admin.conftest import World, figure, messages_of
from tests.conftest import Control

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalogue")]


def sweep_with_minimum(minimum: str) -> None:
    payout_sweep(
        actor=Actor.system("tests"),
        range_for=lambda currency, network: PairRange(Decimal(minimum), None),
    )


def test_the_reason_shows_on_the_client_page_list_and_dashboard(
    as_viewer: HttpClient, world: World
) -> None:
    sweep_with_minimum("1000")
    alpha = Client.objects.get(reference="alpha")
    assert alpha.unpaid_code == "below_minimum"

    page = as_viewer.get(reverse("admin:payouts_client_change", args=[alpha.pk])).content.decode()
    assert "below the exchange minimum of 1000" in figure(page, "why-not-paid")

    listing = as_viewer.get(reverse("admin:payouts_client_changelist")).content.decode()
    assert "below the exchange minimum of 1000" in listing

    dashboard = as_viewer.get(reverse("admin:index")).content.decode()
    assert "below the exchange minimum of 1000" in figure(dashboard, "why-alpha")


def test_the_clients_list_filters_by_reason(as_viewer: HttpClient, world: World) -> None:
    sweep_with_minimum("1000")
    page = as_viewer.get(
        reverse("admin:payouts_client_changelist") + "?unpaid_code__exact=below_minimum"
    ).content.decode()
    assert "Alpha Books" in page and "Beta Coffee" not in page


def test_a_client_the_sweep_has_not_seen_yet_says_so_on_the_dashboard(
    as_viewer: HttpClient, world: World
) -> None:
    dashboard = as_viewer.get(reverse("admin:index")).content.decode()
    assert figure(dashboard, "why-alpha") == "waiting for the next payout sweep"


def test_the_client_form_offers_changenow_pairs_as_pick_lists(
    as_approver: HttpClient, world: World
) -> None:
    page = as_approver.get(
        reverse("admin:payouts_client_change", args=[world.alpha.pk])
    ).content.decode()
    assert '<select name="payout_currency"' in page
    assert '<option value="xmr">XMR - Monero</option>' in page
    assert '<option value="trx">trx</option>' in page  # a network
    assert '<option value="usd"' not in page  # fiat is never a payout currency


def test_operators_refresh_the_catalogue_and_viewers_cannot(
    as_operator: HttpClient, as_viewer: HttpClient, providers: Control
) -> None:
    url = reverse("admin:payouts_currency_refresh")
    listing = reverse("admin:payouts_currency_changelist")
    assert 'data-action="refresh-currencies"' not in as_viewer.get(listing).content.decode()
    assert as_viewer.post(url).status_code == 403
    assert as_operator.get(url).status_code == 403  # a read of ChangeNOW, but only by POST
    assert 'data-action="refresh-currencies"' in as_operator.get(listing).content.decode()

    providers.config(inactive_currencies=["xmr"])
    response = as_operator.post(url, follow=True)
    assert any("no longer offered: xmr/xmr" in m for m in messages_of(response))
    assert not Currency.objects.get(ticker="xmr").active
