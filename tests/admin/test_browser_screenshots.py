"""Screenshots of the dashboard, a batch page, the fee report and a client statement with
realistic data, for a reviewer to look at (`make screenshots` writes them to artifacts/); as
a test, it checks each page renders in the browser into a non-trivial image."""

from __future__ import annotations

import os
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from backoffice.models import JobRun
from backoffice.schedules import SCHEDULES, schedules_setup
from batches.models import ConversionBatch
from payouts.models import Accumulation, ExchangeAttempt, Transfer
from tests.admin.conftest import BTC, complete, credit, sweep
from tests.factories import EIP55_ADDRESS, BatchFactory, ClientFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
XMR = (
    "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wf"
    "n3RVGQBEP3A"
)


def a_working_week() -> ConversionBatch:
    """Four merchants, a month of batches, a completed batch with its full evidence, one
    batch needing attention, one stuck, a few pending payments and healthy jobs."""
    now = timezone.now()
    books = ClientFactory(
        reference="demo-books",
        name="Demo Books",
        payout_currency="btc",
        payout_network="btc",
        payout_address=BTC,
    )
    coffee = ClientFactory(reference="demo-coffee", name="Demo Coffee", instant=True)
    games = ClientFactory(
        reference="demo-games",
        name="Demo Games",
        payout_currency="xmr",
        payout_network="xmr",
        payout_address=XMR,
        payout_threshold_usd=Decimal(25),
    )
    tea = ClientFactory(reference="demo-tea", name="Demo Tea", payout_threshold_usd=200)
    for i in range(29, 0, -1):
        for _ in range(1 + i % 3):
            old = BatchFactory(
                state="completed",
                completed_at=now,
                usdt_received=Decimal(40 + i),
                usdt_received_raw=Decimal(40 + i),
                platform_usdt=Decimal("1.2"),
                exchange_dust=Decimal(0),
                usd_total=Decimal(60 + (i * 37) % 90),
                row_count=3 + i % 5,
            )
            ConversionBatch.objects.filter(pk=old.pk).update(
                created_at=now - timedelta(days=i, hours=i % 7)
            )
    credit(books, eth="0.0041", usd="12.31", n=3)
    credit(coffee, eth="0.0102", usd="30.55", n=2)
    credit(games, eth="0.0067", usd="20.10", n=2)
    credit(tea, eth="0.0023", usd="6.90", n=1)
    batch = sweep()
    ExchangeAttempt.objects.create(
        batch=batch,
        exchange_id="8c1f0a7e2d4b91",
        status="finished",
        from_currency="eth",
        to_currency="usdt",
        to_network="eth",
        amount_from=batch.eth_total,
        expected_amount_to=Decimal("130.41"),
        amount_to=Decimal("131.0127"),
        payin_address=EIP55_ADDRESS,
        payin_hash="0x" + "7d" * 32,
        status_history=[
            {"status": "waiting", "at": (now - timedelta(minutes=40)).isoformat()},
            {"status": "confirming", "at": (now - timedelta(minutes=36)).isoformat()},
            {"status": "exchanging", "at": (now - timedelta(minutes=31)).isoformat()},
            {"status": "sending", "at": (now - timedelta(minutes=25)).isoformat()},
            {"status": "finished", "at": (now - timedelta(minutes=22)).isoformat()},
        ],
    )
    complete(batch, "131.0127", "8c1f0a7e2d4b91")
    Transfer.objects.create(
        batch=batch,
        asset="eth",
        amount=batch.eth_total,
        to_address=EIP55_ADDRESS,
        from_address="0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        chain_id=1,
        nonce=412,
        state="mined",
        raw_tx="0x02f8",
        tx_hash="0x" + "3a9c" * 16,
        broadcast_count=1,
        block_number=21_400_117,
        signed_at=now - timedelta(minutes=39),
        broadcast_at=now - timedelta(minutes=39),
        mined_at=now - timedelta(minutes=38),
    )
    credit(books, eth="0.0047", usd="14.20", n=1)
    BatchFactory(state="needs_attention", last_error="exchange refunded after deposit")
    stuck = BatchFactory(state="converting")
    ConversionBatch.objects.filter(pk=stuck.pk).update(state_changed_at=now - timedelta(hours=7))
    Accumulation.objects.filter(state="pending").update(created_at=now - timedelta(hours=3))
    schedules_setup()
    for job in SCHEDULES:
        JobRun.objects.create(
            name=job.name,
            started_at=now - timedelta(minutes=1),
            finished_at=now,
            outcome="ok",
        )
    return ConversionBatch.objects.get(pk=batch.pk)


def test_it_writes_screenshots_of_the_dashboard_batch_reports_and_a_statement(
    login: Any, approver: User, live_server: Any, tmp_path: Path
) -> None:
    batch = a_working_week()
    out = Path(os.environ.get("SCREENSHOTS_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    page = login(approver)
    page.set_viewport_size({"width": 1440, "height": 1000})
    page.goto(f"{live_server.url}/admin/")
    page.screenshot(path=str(out / "dashboard.png"), full_page=True)
    page.goto(f"{live_server.url}/admin/batches/conversionbatch/{batch.pk}/change/")
    page.wait_for_selector("#distribution")
    page.screenshot(path=str(out / "batch.png"), full_page=True)
    page.goto(f"{live_server.url}/admin/batches/conversionbatch/")
    page.screenshot(path=str(out / "batches.png"), full_page=True)
    today = timezone.now().date()
    month = f"from={today - timedelta(days=29)}&to={today}"
    page.goto(f"{live_server.url}/admin/reports/?report=fees&{month}")
    page.wait_for_selector("#report")
    page.screenshot(path=str(out / "reports.png"), full_page=True)
    page.goto(f"{live_server.url}/admin/reports/?report=statement&{month}&client=demo-books")
    page.wait_for_selector("#report")
    page.screenshot(path=str(out / "statement.png"), full_page=True)
    for name in ("dashboard.png", "batch.png", "batches.png", "reports.png", "statement.png"):
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 20_000, name
