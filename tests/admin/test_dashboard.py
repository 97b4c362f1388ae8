"""The dashboard (admin index): known data gives known figures, each figure links to the
list behind it, trouble shows in red, and the query count does not grow with the data."""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client as HttpClient
from django.urls import reverse
from django.utils import timezone

from backoffice.models import JobRun
from backoffice.schedules import schedules_setup
from payouts.models import Accumulation, Payout
from payouts.payout_sweep import payout_sweep
from tests.admin.conftest import SYSTEM, World, complete, credit, figure, sweep, to_converting
from tests.factories import BatchFactory, ClientFactory, PayoutFactory

pytestmark = pytest.mark.django_db
INDEX = "/admin/"


def test_it_shows_pending_usd_against_the_threshold_and_the_oldest_pending_age(
    world: World, as_viewer: HttpClient
) -> None:
    Accumulation.objects.filter(pk=world.pending.pk).update(
        created_at=timezone.now() - timedelta(hours=3, minutes=5)
    )
    html = as_viewer.get(INDEX).content.decode()
    assert figure(html, "pending-usd") == "$14.20"
    assert "of $20.00 threshold" in html
    assert 'width="71%"' in html  # 14.20 / 20 (an SVG bar: the CSP allows no inline style)
    assert figure(html, "pending-count") == "1 payment"
    assert figure(html, "oldest-pending") == "3 h 5 min"


def test_it_shows_money_per_state_and_the_platform_share_of_known_data(
    world: World, as_viewer: HttpClient
) -> None:
    html = as_viewer.get(INDEX).content.decode()
    # 88.2 USDT for 0.03 ETH at a 3 % fee: each 0.01 ETH row gets 28.518, the platform 2.646.
    assert figure(html, "money-converted-count") == "3"
    assert figure(html, "money-converted-eth") == "0.03"
    assert figure(html, "money-converted-usdt") == "85.554"
    assert figure(html, "platform-usdt") == "2.646"
    assert figure(html, "money-pending-eth") == "0.005"
    assert figure(html, "batches-completed") == "1"


def test_it_lists_converted_usdt_owed_to_clients_at_their_threshold(
    world: World, as_viewer: HttpClient
) -> None:
    under = ClientFactory(reference="gamma", payout_threshold_usd=1000)
    credit(under)
    html = as_viewer.get(INDEX).content.decode()
    assert figure(html, "owed-alpha") == "57.036"  # two rows, threshold $50 reached
    assert figure(html, "owed-beta") == "28.518"  # instant
    assert 'data-figure="owed-gamma"' not in html  # pending only, and under its threshold
    assert figure(html, "owed-total") == "2 clients, 85.554 USDT"


def test_it_counts_orders_needing_attention_and_stuck_ones_in_red_with_links(
    as_viewer: HttpClient,
) -> None:
    BatchFactory(state="needs_attention")
    stuck = BatchFactory(state="converting")
    BatchFactory(state="converting")  # recent: not stuck
    PayoutFactory(state="funds_sent")
    type(stuck).objects.filter(pk=stuck.pk).update(
        state_changed_at=timezone.now() - timedelta(hours=7)  # default limit: 6 h
    )
    html = as_viewer.get(INDEX).content.decode()
    assert figure(html, "attention-batches") == "1"
    assert figure(html, "stuck-batches") == "1"
    assert figure(html, "stuck-payouts") == "0"
    assert 'class="bad" data-figure="attention-batches"' in html
    assert 'class="bad" data-figure="stuck-batches"' in html
    assert 'class="" data-figure="stuck-payouts"' in html
    stuck_list = as_viewer.get(
        reverse("admin:batches_conversionbatch_changelist") + "?stuck=yes"
    ).content.decode()
    assert str(stuck.pk)[:8] in stuck_list
    assert stuck_list.count("(stuck)") == 1


def test_each_figure_links_to_the_filtered_list_behind_it(
    world: World, as_viewer: HttpClient
) -> None:
    html = as_viewer.get(INDEX).content.decode()
    changelist = reverse("admin:payouts_accumulation_changelist")
    link = f'href="{changelist}?state__exact=pending" data-figure="pending-usd"'
    assert link in html
    listed = as_viewer.get(f"{changelist}?state__exact=pending").content.decode()
    assert world.pending.payment_id in listed
    converted = Accumulation.objects.filter(state="converted").first()
    assert converted is not None
    assert converted.payment_id not in listed
    batches = reverse("admin:batches_conversionbatch_changelist")
    accounts = reverse("admin:ledger_account_changelist")
    assert f'href="{accounts}?q=platform_fees" data-figure="platform-usdt"' in html
    ledger = as_viewer.get(f"{accounts}?q=platform_fees")
    assert ledger.status_code == 200 and "platform_fees" in ledger.content.decode()
    assert f'href="{batches}?state__exact=needs_attention"' in html


def test_it_shows_the_last_run_of_each_job_and_flags_a_late_one(
    as_viewer: HttpClient,
) -> None:
    schedules_setup()
    now = timezone.now()
    JobRun.objects.create(
        name="advance",
        started_at=now - timedelta(minutes=30),
        finished_at=now - timedelta(minutes=30),
        outcome="ok",
    )
    JobRun.objects.create(
        name="watchdog",
        started_at=now - timedelta(minutes=1),
        finished_at=now,
        outcome="failed",
        error="RuntimeError: boom",
    )
    html = as_viewer.get(INDEX).content.decode()
    assert '<td data-job="advance">ok — late: last successful run 30 min ago' in html
    assert '<td data-job="watchdog">failed' in html and "RuntimeError: boom" in html
    assert figure(html, "late-jobs") != "0"


def test_it_renders_in_the_same_bounded_number_of_queries_whatever_the_data_size(
    world: World, as_viewer: HttpClient, django_assert_max_num_queries
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    as_viewer.get(INDEX)  # sessions, permissions and settings row warm
    with CaptureQueriesContext(connection) as small:
        assert as_viewer.get(INDEX).status_code == 200
    clients = [ClientFactory() for _ in range(5)]
    for client in clients:
        credit(client, n=20)
    sweep()
    for state in ("needs_attention", "converting"):
        BatchFactory.create_batch(5, state=state)
    PayoutFactory.create_batch(5, state="reserved")
    # 13, plus fee income from the ledger, open alerts and orders retrying after errors.
    with django_assert_max_num_queries(16), CaptureQueriesContext(connection) as big:
        assert as_viewer.get(INDEX).status_code == 200
    assert len(big.captured_queries) == len(small.captured_queries)


def test_yesterdays_figures_link_to_yesterdays_batches(as_viewer: HttpClient) -> None:
    from batches.models import ConversionBatch

    now = timezone.now()
    old = BatchFactory(
        state="completed",
        completed_at=now,
        usdt_received=1,
        platform_usdt=0,
        usdt_received_raw=1,
        exchange_dust=0,
        row_count=4,
    )
    ConversionBatch.objects.filter(pk=old.pk).update(created_at=now - timedelta(days=1))
    today = BatchFactory(state="reserved")
    html = as_viewer.get(INDEX).content.decode()
    assert "4 payments converted in 1 batches" in html
    link = re.search(r'Yesterday: <a href="([^"]+)"', html)
    assert link is not None
    listed = as_viewer.get(link.group(1).replace("&amp;", "&")).content.decode()
    assert str(old.pk)[:8] in listed and str(today.pk)[:8] not in listed


def test_it_lists_failed_django_q_tasks(as_viewer: HttpClient) -> None:
    from django_q.models import Task

    now = timezone.now()
    Task.objects.create(
        id="t-1",
        name="failing-one",
        func="payouts.tasks.advance_order",
        started=now,
        stopped=now,
        success=False,
        result="ProviderError: 502",
    )
    html = as_viewer.get(INDEX).content.decode()
    assert figure(html, "failed-tasks") == "1"
    assert "payouts.tasks.advance_order" in html and "ProviderError: 502" in html


def test_requests_waiting_for_an_approver_are_on_the_dashboard(
    as_viewer: HttpClient, approver: object, db: object
) -> None:
    from payouts.approvals import approval_request
    from tests.admin.conftest import credit, sweep
    from tests.factories import ClientFactory

    assert figure(as_viewer.get(INDEX).content.decode(), "approvals") == "0"
    credit(ClientFactory(), n=2)
    batch = sweep()
    approval_request(
        action="force_close", kind="batch", order_id=batch.pk, reason="stuck", user=approver
    )
    html = as_viewer.get(INDEX).content.decode()
    assert figure(html, "approvals") == "1"
    assert 'class="bad" data-figure="approvals"' in html


def test_finance_roles_get_no_link_to_django_q_pages_they_cannot_open(
    as_viewer: HttpClient, db: object
) -> None:
    html = as_viewer.get(INDEX).content.decode()
    assert reverse("admin:django_q_failure_changelist") not in html
    assert 'data-figure="failed-tasks"' in html


def test_today_open_alerts_and_orders_retrying_after_errors_are_on_the_dashboard(
    as_viewer: HttpClient,
) -> None:
    from backoffice.operations import alert_raise

    BatchFactory(state="reserved", row_count=3)
    retrying = BatchFactory(
        state="funds_sent", retry_count=2, last_error_code="server_error", last_error="503"
    )
    alert_raise(key="order_stuck:x", kind="order_stuck", message="batch x stuck in converting")
    html = as_viewer.get(INDEX).content.decode()
    assert figure(html, "open-alerts") == "1"
    assert "batch x stuck in converting" in html
    assert figure(html, "retrying") == "1"
    assert f'data-figure="retrying-{str(retrying.pk)[:8]}"' in html
    assert "Today:" in html
    alerts = re.search(r'href="([^"]+)"[^>]*data-figure="open-alerts"', html)
    assert alerts is not None
    listed = as_viewer.get(alerts.group(1).replace("&amp;", "&")).content.decode()
    assert "order_stuck" in listed


def test_the_fee_chart_totals_the_ledger_fee_income_of_the_last_30_days(
    world: World, as_viewer: HttpClient
) -> None:
    from ledger.services import account_balance
    from payouts.formatting import amount_text

    html = as_viewer.get(INDEX).content.decode()
    earned = account_balance("platform_fees", "usdt")
    assert earned > 0
    assert figure(html, "fees-30d") == f"{amount_text(earned, 'usdt')} USDT"


def _by_state() -> dict[str, tuple[int, Decimal, Decimal]]:
    """The whole-table truth the dashboard no longer computes itself."""
    with connection.cursor() as cur:
        cur.execute(
            "SELECT state, count(*), sum(eth), coalesce(sum(usdt), 0) "
            "FROM payouts_accumulation GROUP BY state"
        )
        return {s: (n, eth, usdt) for s, n, eth, usdt in cur}


def test_its_money_per_state_equals_the_rows_in_every_state(
    world: World, as_viewer: HttpClient
) -> None:
    result = payout_sweep(actor=SYSTEM, range_for=lambda currency, network: None)
    assert result.created == 1, result  # beta (instant, direct USDT); alpha's range unread
    (paid,) = Payout.objects.all()
    Accumulation.objects.filter(payout=paid).update(state="paid")
    Payout.objects.filter(pk=paid.pk).update(state="completed", completed_at=timezone.now())
    credit(world.beta)
    complete(sweep(), "30", "cnx-dashboard-01")
    assert payout_sweep(actor=SYSTEM, range_for=lambda currency, network: None).created == 1
    paying = Payout.objects.exclude(pk=paid.pk).get()
    credit(world.beta, n=2)  # with the pending row: a new batch, converting
    converting = sweep()
    to_converting(converting, "cnx-dashboard-02")
    gone = credit(world.alpha)[0]
    Accumulation.objects.filter(pk=gone.pk).update(state="written_off", batch=converting)
    truth = _by_state()
    assert set(truth) == {"converted", "converting", "paying", "paid", "written_off"}

    html = as_viewer.get(INDEX).content.decode()
    for state, (count, eth, usdt) in truth.items():
        assert figure(html, f"money-{state}-count") == str(count), state
        assert Decimal(figure(html, f"money-{state}-eth")) == eth, state
        if usdt:
            assert Decimal(figure(html, f"money-{state}-usdt")) == usdt, state
    assert figure(html, "money-pending-count") == "0"
    assert paying.row_count == truth["paying"][0]


def test_its_money_per_state_is_the_kept_totals_not_a_sum_of_the_rows(
    world: World, as_viewer: HttpClient
) -> None:
    from payouts.models import AccumulationTotal

    truth = _by_state()
    # A delta no row explains (what reconcile reports): the panel shows it, so the panel
    # reads the kept totals and never the table.
    AccumulationTotal.objects.create(
        state="paid", row_count=7, eth=Decimal("0.7"), usd=Decimal(2100), usdt=Decimal(2000)
    )
    html = as_viewer.get(INDEX).content.decode()
    assert figure(html, "money-paid-count") == "7"
    assert figure(html, "money-paid-eth") == "0.7"
    assert figure(html, "money-converted-count") == str(truth["converted"][0])
