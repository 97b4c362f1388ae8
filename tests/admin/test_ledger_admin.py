"""The Ledger in admin: balances per account, an account's lines, a transaction's legs with
the link to its cause, and the client page's ledger lines."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from ledger.models import Account, LedgerTransaction
from tests.admin.conftest import World
from tests.factories import AccumulationFactory, ClientFactory

pytestmark = pytest.mark.django_db
ACCOUNTS = reverse("admin:ledger_account_changelist")


def test_a_viewer_sees_every_balance_in_its_natural_sign(
    world: World, as_viewer: HttpClient
) -> None:
    html = as_viewer.get(f"{ACCOUNTS}?q=platform_fees").content.decode()
    assert "platform_fees" in html and "2.646" in html  # income, shown positive
    client = AccumulationFactory(eth=Decimal("0.5")).client
    html = as_viewer.get(f"{ACCOUNTS}?q=clients:{client.reference}").content.decode()
    assert f"clients:{client.reference}" in html and "0.5" in html


def test_the_account_list_costs_the_same_queries_for_many_accounts(
    as_viewer: HttpClient,
) -> None:
    AccumulationFactory.create_batch(3)
    with CaptureQueriesContext(connection) as few:
        assert as_viewer.get(ACCOUNTS).status_code == 200
    for _ in range(30):
        AccumulationFactory(client=ClientFactory())
    with CaptureQueriesContext(connection) as many:
        assert as_viewer.get(ACCOUNTS).status_code == 200
    assert len(many) == len(few)


def test_a_transaction_page_shows_its_legs_and_links_its_cause(
    world: World, as_viewer: HttpClient
) -> None:
    posting = LedgerTransaction.objects.filter(kind="batch_completed").first()
    assert posting is not None
    html = as_viewer.get(
        reverse("admin:ledger_ledgertransaction_change", args=[posting.pk])
    ).content.decode()
    assert reverse("admin:batches_conversionbatch_change", args=[posting.batch_id]) in (
        as_viewer.get(reverse("admin:ledger_ledgertransaction_changelist")).content.decode()
    )
    assert "platform_fees" in html and "host_wallet" in html and "in_transit:" in html
    host = Account.objects.get(name="host_wallet", asset="eth")
    lines = as_viewer.get(reverse("admin:ledger_account_change", args=[host.pk])).content.decode()
    assert "intake" in lines


def test_the_client_page_shows_what_the_books_owe_it(as_viewer: HttpClient) -> None:
    client = ClientFactory(reference="ledger-co")
    AccumulationFactory(client=client, eth=Decimal("0.25"), payment_id="777001")
    html = as_viewer.get(reverse("admin:payouts_client_change", args=[client.pk])).content.decode()
    assert 'id="ledger"' in html
    text = re.sub(r"<[^>]+>", "", html)  # amounts sit in their own <span>
    assert "Owed to the client by the books: 0.25 ETH" in text
    assert "payment 777001" in html


def test_nobody_edits_or_deletes_a_ledger_row_through_admin(
    world: World, as_approver: HttpClient
) -> None:
    posting = LedgerTransaction.objects.first()
    url = reverse("admin:ledger_ledgertransaction_change", args=[posting.pk])
    response = as_approver.post(url, {"memo": "edited"})
    assert response.status_code == 403
    delete = reverse("admin:ledger_ledgertransaction_delete", args=[posting.pk])
    assert as_approver.post(delete, {"post": "yes"}).status_code == 403
    assert LedgerTransaction.objects.get(pk=posting.pk).memo != "edited"
