"""CSV exports: streamed from a server-side cursor in chunks, the filtered list or the
selection, with exact amounts, spreadsheet formulas neutralised, and the export audited."""

from __future__ import annotations

import pytest
from django.db import connection
from django.http import StreamingHttpResponse
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from backoffice.exports import iter_rows
from backoffice.services import demo_seed
from payouts.models import Accumulation, AuditEvent
from tests.admin.conftest import World
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db
EXPORT = "admin:payouts_accumulation_export"


def test_it_streams_the_filtered_list_with_exact_amounts(
    as_operator: HttpClient, world: World
) -> None:
    response = as_operator.get(reverse(EXPORT) + "?state__exact=converted")
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "text/csv"
    assert response["Content-Disposition"].startswith('attachment; filename="accumulation-')
    rows = iter_rows(response.streaming_content)
    header, body = rows[0], rows[1:]
    assert header[:5] == ["id", "payment_id", "order_id", "client_reference", "eth"]
    assert len(body) == 3
    by_client = sorted((r[3], r[4], r[7], r[8]) for r in body)
    assert by_client == [
        ("alpha", "0.01", "28.518", "converted"),
        ("alpha", "0.01", "28.518", "converted"),
        ("beta", "0.01", "28.518", "converted"),
    ]


def test_it_exports_only_the_selected_rows_through_the_action(
    as_operator: HttpClient, world: World
) -> None:
    response = as_operator.post(
        reverse("admin:payouts_accumulation_changelist"),
        {"action": "export_csv", "_selected_action": [str(world.pending.pk)], "index": "0"},
    )
    rows = iter_rows(response.streaming_content)
    assert [r[1] for r in rows[1:]] == [world.pending.payment_id]
    assert rows[1][5] == "14.2"


def test_it_neutralises_cells_a_spreadsheet_would_run_as_formulas(
    as_operator: HttpClient, db: object
) -> None:
    ClientFactory(reference="evil", name='=HYPERLINK("http://x")')
    response = as_operator.get(reverse("admin:payouts_client_export"))
    rows = iter_rows(response.streaming_content)
    assert rows[1][1] == '\'=HYPERLINK("http://x")'


def test_each_export_is_recorded_in_the_audit_trail(as_operator: HttpClient, world: World) -> None:
    b"".join(as_operator.get(reverse(EXPORT) + "?state__exact=pending").streaming_content)
    event = AuditEvent.objects.get(kind="exported")
    assert event.actor == "user:operator-user" and event.object_type == "accumulation"
    assert event.data == {"scope": "filtered list", "query": "state__exact=pending"}


def test_a_large_export_streams_in_chunks_with_a_constant_number_of_queries(
    as_operator: HttpClient, db: object
) -> None:
    demo_seed(clients=10, accumulations=5_000)
    with CaptureQueriesContext(connection) as queries:
        response = as_operator.get(reverse(EXPORT))
        chunks = list(response.streaming_content)
    assert len(chunks) >= 3  # header, then chunks of 2,000 rows: never one big string
    assert sum(chunk.count(b"\n") for chunk in chunks) == 5_001
    # One SELECT through a server-side cursor, whatever the row count (no per-row query).
    selects = [q for q in queries.captured_queries if "payouts_accumulation" in q["sql"]]
    assert len(selects) <= 3, [q["sql"][:120] for q in selects]
    assert sum("CURSOR" in q["sql"] for q in selects) == 1
    assert Accumulation.objects.count() == 5_000


def test_the_export_link_carries_the_list_filters(as_operator: HttpClient, world: World) -> None:
    page = as_operator.get(
        reverse("admin:payouts_accumulation_changelist") + "?state__exact=pending"
    ).content.decode()
    assert f'href="{reverse(EXPORT)}?state__exact=pending"' in page
