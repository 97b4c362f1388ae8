"""Lists and object pages: bounded query counts, no full COUNT(*) of big tables, exact
searches by the ids finance has in hand, and pages that explain an order or a payment."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from payouts.admin.support import CappedCountPaginator
from payouts.models import Accumulation, AuditEvent, ExchangeAttempt, Transfer
from tests.admin.conftest import World, credit, sweep
from tests.factories import EIP55_ADDRESS, ClientFactory

pytestmark = pytest.mark.django_db
TX = "0x" + "5e" * 32

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


@pytest.fixture
def traced(world: World) -> World:
    """The completed batch with the evidence an engine run leaves: attempt and transfer."""
    ExchangeAttempt.objects.create(
        batch=world.completed,
        exchange_id="cnx-completed-01",
        status="finished",
        from_currency="eth",
        to_currency="usdt",
        to_network="eth",
        amount_from=world.completed.eth_total,
        amount_to=88.2,
        status_history=[
            {"status": "waiting", "at": "2026-01-05T10:00:00+00:00"},
            {"status": "exchanging", "at": "2026-01-05T10:09:00+00:00"},
            {"status": "finished", "at": "2026-01-05T10:15:00+00:00"},
        ],
    )
    Transfer.objects.create(
        batch=world.completed,
        asset="eth",
        amount=world.completed.eth_total,
        to_address=EIP55_ADDRESS,
        from_address=EIP55_ADDRESS,
        chain_id=1,
        nonce=3,
        state="mined",
        raw_tx="0x02",
        tx_hash=TX,
    )
    return world


@pytest.mark.parametrize("name", LISTS)
def test_every_list_renders_in_at_most_12_queries(
    name: str, traced: World, as_approver: HttpClient, django_assert_max_num_queries: Any
) -> None:
    url = reverse(f"admin:{name}_changelist")
    as_approver.get(url)
    with django_assert_max_num_queries(12):
        assert as_approver.get(url).status_code == 200


@pytest.mark.parametrize("name", ["backoffice_jobrun", "backoffice_alert"])
def test_the_job_run_and_alert_lists_render_for_an_admin(
    name: str, admin_client: HttpClient, django_assert_max_num_queries: Any
) -> None:
    # The finance roles do not grant view_jobrun / view_alert yet (roles_setup).
    url = reverse(f"admin:{name}_changelist")
    with django_assert_max_num_queries(12):
        assert admin_client.get(url).status_code == 200


def test_object_pages_render_in_at_most_14_queries(
    traced: World, as_approver: HttpClient, django_assert_max_num_queries: Any
) -> None:
    from decimal import Decimal

    from payouts.limits import PairRange
    from payouts.models import Payout
    from payouts.payout_sweep import payout_sweep
    from tests.admin.conftest import SYSTEM

    payout_sweep(actor=SYSTEM, range_for=lambda currency, network: PairRange(Decimal(0), None))
    pages = [
        reverse("admin:payouts_payout_change", args=[Payout.objects.first().pk]),
        reverse("admin:batches_conversionbatch_change", args=[traced.completed.pk]),
        reverse("admin:payouts_client_change", args=[traced.alpha.pk]),
        reverse("admin:payouts_accumulation_change", args=[traced.pending.pk]),
    ]
    # 12 before this round, plus the approver's second-factor device and the transaction
    # history of the order's transfers (one query for all of them, however many).
    for url in pages:
        as_approver.get(url)
        with django_assert_max_num_queries(14):
            assert as_approver.get(url).status_code == 200


def test_no_list_counts_the_whole_accumulation_table(world: World, as_viewer: HttpClient) -> None:
    with CaptureQueriesContext(connection) as queries:
        as_viewer.get(reverse("admin:payouts_accumulation_changelist") + "?state__exact=paid")
        as_viewer.get(reverse("admin:payouts_accumulation_changelist"))
    counts = [q["sql"] for q in queries.captured_queries if "COUNT(" in q["sql"].upper()]
    assert counts, "the list should count (boundedly)"
    assert all("LIMIT 10001" in sql for sql in counts), counts


def test_the_paginator_estimates_unfiltered_lists_and_caps_filtered_counts(
    db: object,
) -> None:
    from backoffice.services import demo_seed

    demo_seed(clients=3, accumulations=40)
    with connection.cursor() as cur:
        cur.execute("ANALYZE payouts_accumulation")

    class Small(CappedCountPaginator):
        cap = 10

    unfiltered = Small(Accumulation.objects.order_by("-id"), 5)
    assert (unfiltered.count, unfiltered.count_is_exact) == (40, False)
    assert unfiltered.count_label == "about 40"
    filtered = Small(Accumulation.objects.filter(state="pending").order_by("-id"), 5)
    assert (filtered.count, filtered.count_is_exact) == (11, False)
    assert filtered.count_label == "more than 10"
    assert len(filtered.page(5).object_list) == 5  # past the cap: still reachable
    assert len(filtered.page(9).object_list) == 0
    exact = Small(Accumulation.objects.filter(state="paid"), 5)
    assert (exact.count, exact.count_is_exact, exact.count_label) == (0, True, "0")


@pytest.mark.parametrize(
    "term",
    ["payment", "client", "exchange", "tx", "batch"],
)
def test_a_payment_is_found_by_any_id_finance_has_in_hand(
    term: str, traced: World, as_viewer: HttpClient
) -> None:
    converted = Accumulation.objects.filter(client=traced.alpha, state="converted").first()
    assert converted is not None
    query = {
        "payment": converted.payment_id,
        "client": "alpha",
        "exchange": "cnx-completed-01",
        "tx": TX.upper().replace("0X", "0x"),
        "batch": str(traced.completed.pk),
    }[term]
    page = as_viewer.get(
        reverse("admin:payouts_accumulation_changelist"), {"q": query}
    ).content.decode()
    assert converted.payment_id in page
    if term == "payment":
        assert page.count('class="field-payment_id"') == 1


def test_orders_are_found_by_exchange_id_tx_hash_and_payment_id(
    traced: World, as_viewer: HttpClient
) -> None:
    other = ClientFactory()
    credit(other)
    open_batch = sweep()
    url = reverse("admin:batches_conversionbatch_changelist")
    short = str(traced.completed.pk)[:8]
    paid_in = Accumulation.objects.filter(batch=traced.completed).first()
    assert paid_in is not None
    for term in ("cnx-completed-01", TX, paid_in.payment_id):
        page = as_viewer.get(url, {"q": term}).content.decode()
        assert short in page, term
        assert str(open_batch.pk)[:8] not in page, term


def test_the_batch_page_explains_the_batch(traced: World, as_viewer: HttpClient) -> None:
    page = as_viewer.get(
        reverse("admin:batches_conversionbatch_change", args=[traced.completed.pk])
    ).content.decode()
    # distribution: clients' shares and the platform's add up to what was received
    assert "85.554 (clients) + 2.646 (platform) = 88.20 USDT received" in page
    assert "balanced" in page
    assert "57.036" in page and "28.518" in page
    # exchange attempts with their status history, the transfer with an explorer link
    assert "exchanging <span" in page and "2026-01-05 10:09:00" in page
    assert f'href="https://etherscan.io/tx/{TX}"' in page
    # rows summary and audit timeline inline
    assert 'id="rows-summary"' in page and ">converted</a>" in page
    assert "converting → completed" in page and "system:admin-tests" in page


def test_the_payment_page_says_where_the_money_is(traced: World, as_viewer: HttpClient) -> None:
    converted = Accumulation.objects.filter(client=traced.alpha, state="converted").first()
    assert converted is not None
    page = as_viewer.get(
        reverse("admin:payouts_accumulation_change", args=[converted.pk])
    ).content.decode()
    assert "0.01 ETH → 28.518 USDT" in page
    assert "Waiting for the client's payout: balance 57.036 USDT of a $50.00 threshold" in page


def test_the_audit_list_filters_by_object(traced: World, as_viewer: HttpClient) -> None:
    url = reverse("admin:payouts_auditevent_changelist")
    page = as_viewer.get(
        url, {"object_type": "conversionbatch", "object_id": str(traced.completed.pk)}
    ).content.decode()
    expected = AuditEvent.objects.filter(object_id=str(traced.completed.pk)).count()
    assert page.count('class="field-kind"') == expected > 0


def test_a_big_list_says_its_count_is_an_estimate(as_viewer: HttpClient, db: object) -> None:
    from backoffice.services import demo_seed

    demo_seed(clients=3, accumulations=10_050)
    with connection.cursor() as cur:
        cur.execute("ANALYZE payouts_accumulation")
    page = as_viewer.get(reverse("admin:payouts_accumulation_changelist")).content.decode()
    assert "about 10,050 accumulations" in page
    assert "about 10,050 results" in page
    pending = as_viewer.get(
        reverse("admin:payouts_accumulation_changelist"), {"state__exact": "pending"}
    ).content.decode()
    assert "more than 10,000 accumulations" in pending


def test_the_rows_links_of_a_batch_page_list_exactly_its_rows(
    traced: World, as_viewer: HttpClient
) -> None:
    import re

    page = as_viewer.get(
        reverse("admin:batches_conversionbatch_change", args=[traced.completed.pk])
    ).content.decode()
    match = re.search(r'<a class="bo-note" href="([^"]+)">\(list them\)</a>', page)
    assert match is not None
    listed = as_viewer.get(match.group(1).replace("&amp;", "&")).content.decode()
    assert listed.count('class="field-payment_id"') == 3
    assert traced.pending.payment_id not in listed
