"""Finance's month-end and look-up work in a real browser at 1,280 x 800: two field errors
at once on the client form, November's payouts through the date pickers with a CSV that
has hashes and USD, search by order id and hash prefix, and a sync that says what
ChangeNOW said."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User

from payouts.models import Accumulation, Payout, Transfer
from tests.backoffice.test_reports import paid_out
from tests.conftest import Control
from tests.payouts.test_operator import sent_batch

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def at_1280(page: Any) -> Any:
    page.set_viewport_size({"width": 1280, "height": 800})
    return page


def test_the_client_form_shows_two_field_errors_at_once(
    login: Any, approver: User, live_server: Any, catalogue: None
) -> None:
    from tests.factories import ClientFactory

    client = ClientFactory(reference="typo-co")
    page = at_1280(login(approver))
    page.goto(f"{live_server.url}/admin/payouts/client/{client.pk}/change/")
    page.fill("#id_payout_threshold_usd", "-10")
    page.fill("#id_payout_address", "0xnotanaddress")
    page.fill("#id_reason", "two typos")
    page.click("input[name=_save]")
    page.wait_for_selector(".errorlist")
    errors = page.locator(".errorlist li").all_inner_texts()
    assert "Threshold must be more than 0" in errors
    assert any(e.startswith("Payout address:") for e in errors)
    assert "Constraint" not in page.inner_text("#content")


def test_november_payouts_through_the_date_pickers_with_hashes_and_usd_in_the_csv(
    login: Any, viewer: User, live_server: Any, providers: Control
) -> None:
    payouts = paid_out(providers)
    Payout.objects.filter(pk=payouts["m1"].pk).update(
        completed_at=datetime(2026, 11, 12, 9, 30, tzinfo=UTC)
    )
    page = at_1280(login(viewer))
    page.click("text=Reports")
    page.select_option("select[name=report]", "payouts")
    page.fill("input[name=from]", "2026-11-01")
    page.fill("input[name=to]", "2026-11-30")
    page.click("button:has-text('Show')")
    page.wait_for_selector("table[data-report=payouts]")
    assert "m1" in page.inner_text("table[data-report=payouts] tbody")
    assert "m0" not in page.inner_text("table[data-report=payouts] tbody")
    with page.expect_download() as download:
        page.click("[data-action=download-csv]")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["client"] == "m1" and rows[0]["tx_hash"] and rows[0]["funding_tx_hash"]
    assert float(rows[0]["usd_at_intake"]) > 0


def test_search_finds_a_payment_by_order_id_and_a_transfer_by_hash_prefix(
    login: Any, viewer: User, live_server: Any, providers: Control
) -> None:
    paid_out(providers)
    payment = Accumulation.objects.exclude(order_id="").first()
    transfer = Transfer.objects.exclude(mined_hash="").first()
    assert payment is not None and transfer is not None
    page = at_1280(login(viewer))
    page.goto(f"{live_server.url}/admin/payouts/accumulation/")
    page.fill("#searchbar", payment.order_id)
    page.press("#searchbar", "Enter")
    page.wait_for_selector("#result_list")
    assert payment.payment_id in page.inner_text("#result_list")
    page.goto(f"{live_server.url}/admin/payouts/transfer/")
    page.fill("#searchbar", transfer.mined_hash[:10])
    page.press("#searchbar", "Enter")
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list tbody tr").count() == 1


def test_sync_on_a_stuck_batch_shows_what_changenow_said(
    login: Any, operator: User, live_server: Any, providers: Control
) -> None:
    batch = sent_batch(providers)
    providers.script(batch.exchange_id, outcome="stuck", status="exchanging")
    providers.advance(30)
    page = at_1280(login(operator))
    page.goto(f"{live_server.url}/admin/batches/conversionbatch/{batch.pk}/change/")
    page.click("button[data-action=sync_now]")
    page.click("#confirm-action")
    page.wait_for_selector(".messagelist")
    said = page.inner_text(".messagelist")
    assert f"ChangeNOW says exchanging for exchange {batch.exchange_id}" in said
    assert "ETH in" in said
