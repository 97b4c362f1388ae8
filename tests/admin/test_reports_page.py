"""The admin's Reports page: date pickers, the three reports on screen and as CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

import pytest
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from payouts.models import Payout
from tests.admin.conftest import figure
from tests.backoffice.test_reports import paid_out
from tests.conftest import Control

pytestmark = pytest.mark.django_db
URL = reverse("admin:reports")


def test_november_payouts_are_reachable_with_the_date_pickers_and_their_csv_has_hashes(
    as_viewer: HttpClient, providers: Control
) -> None:
    payouts = paid_out(providers)
    Payout.objects.filter(pk=payouts["m1"].pk).update(
        completed_at=datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    )
    page = as_viewer.get(URL).content.decode()
    assert 'type="date" name="from"' in page and 'type="date" name="to"' in page
    query = {"report": "payouts", "from": "2026-11-01", "to": "2026-11-30"}
    page = as_viewer.get(URL, query).content.decode()
    section = page.split('id="report"')[1]
    assert payouts["m1"].exchange_id in section and ">m0<" not in section and ">m1<" in section
    response = as_viewer.get(URL, {**query, "format": "csv"})
    assert response["Content-Type"].startswith("text/csv")
    assert "payouts-2026-11-01-2026-11-30.csv" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert rows[0]["client"] == "m1" and len(rows[0]["tx_hash"]) == 64  # a BTC hash
    assert rows[0]["funding_tx_hash"].startswith("0x")
    assert float(rows[0]["usd_at_intake"]) > 0


def test_the_fee_and_statement_reports_show_for_today(
    as_viewer: HttpClient, providers: Control
) -> None:
    paid_out(providers)
    today = timezone.now().astimezone(UTC).date().isoformat()
    fees = as_viewer.get(URL, {"report": "fees", "from": today, "to": today}).content.decode()
    assert 'data-report="fees"' in fees and today in fees
    statement = as_viewer.get(
        URL, {"report": "statement", "from": today, "to": today, "client": "m1"}
    ).content.decode()
    assert 'data-report="statement"' in statement and ">m1<" in statement


def test_a_wrong_range_is_explained_on_the_page(as_viewer: HttpClient) -> None:
    page = as_viewer.get(URL, {"report": "fees", "from": "2026-12-01", "to": "2026-11-01"})
    assert page.status_code == 200
    assert "before the start date" in figure(page.content.decode(), "report-error")
    assert as_viewer.get(URL, {"from": "31/11/2026"}).status_code == 200


def test_only_staff_with_the_ledger_view_see_reports(client: HttpClient) -> None:
    assert client.get(URL).status_code == 302  # to the login
