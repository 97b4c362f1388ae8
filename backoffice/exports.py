"""CSV exports of admin lists, streamed.

Design: rows are read with `values_list(...).iterator(chunk_size=...)` (a server-side cursor
on PostgreSQL) and written through `csv.writer` into a `StreamingHttpResponse`, so memory
stays flat whether the list has 10 or 10,000,000 rows, and the first bytes leave at once.
What to export is declared by each ModelAdmin (`export_columns`: header and field path);
this module is the one place that knows how. An export is data leaving the system: it is
permission-checked (`payouts.export_data`) and recorded in the audit trail.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from integrations.assets import format_amount
from payouts.transitions import Actor, audit_record

CHUNK_ROWS = 2000
EXPORT_PERMISSION = "payouts.export_data"
# A cell a spreadsheet would run as a formula: neutralised with a leading quote.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class _Line:
    """csv.writer target that hands back the line instead of storing it."""

    def write(self, value: str) -> str:
        return value


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format_amount(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_lines(queryset: QuerySet, columns: Sequence[tuple[str, str]]) -> Iterator[bytes]:
    """The header, then every row, as UTF-8 bytes in chunks of about CHUNK_ROWS lines."""
    writer = csv.writer(_Line())
    yield writer.writerow([header for header, _path in columns]).encode()
    paths = [path for _header, path in columns]
    buffer: list[str] = []
    for row in queryset.values_list(*paths).iterator(chunk_size=CHUNK_ROWS):
        buffer.append(writer.writerow([_cell(value) for value in row]))
        if len(buffer) >= CHUNK_ROWS:
            yield "".join(buffer).encode()
            buffer.clear()
    if buffer:
        yield "".join(buffer).encode()


def stream_csv(
    queryset: QuerySet, columns: Sequence[tuple[str, str]], name: str
) -> StreamingHttpResponse:
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(csv_lines(queryset, columns), content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response


def _record(request: HttpRequest, model_admin: admin.ModelAdmin, scope: dict[str, Any]) -> None:
    audit_record(
        object_type=model_admin.model._meta.model_name or "",
        object_id="*",
        kind="exported",
        actor=Actor.of_user(request.user),
        data=scope,
    )


def _check(request: HttpRequest, model_admin: admin.ModelAdmin) -> Sequence[tuple[str, str]]:
    columns: Sequence[tuple[str, str]] = getattr(model_admin, "export_columns", ())
    allowed = request.user.has_perm(EXPORT_PERMISSION) and model_admin.has_view_permission(request)
    if not columns or not allowed:
        raise PermissionDenied
    return columns


@admin.action(description="Export the selection to CSV")
def export_csv(
    model_admin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet
) -> StreamingHttpResponse:
    """Site-wide action (enabled per ModelAdmin by listing "export_csv"): the selected rows,
    or every row of the filtered list when "select all" was used."""
    columns = _check(request, model_admin)
    across = request.POST.get("select_across") == "1"
    _record(
        request,
        model_admin,
        {"scope": "filtered list" if across else "selection", "query": request.GET.urlencode()},
    )
    return stream_csv(queryset.order_by("pk"), columns, model_admin.model._meta.model_name or "")


def export_view(model_admin: admin.ModelAdmin) -> Any:
    """GET <changelist>/export/?<the list's filters>: the whole filtered list as CSV."""

    def view(request: HttpRequest) -> StreamingHttpResponse:
        columns = _check(request, model_admin)
        changelist = model_admin.get_changelist_instance(request)
        queryset = changelist.get_queryset(request)
        _record(request, model_admin, {"scope": "filtered list", "query": request.GET.urlencode()})
        return stream_csv(queryset, columns, model_admin.model._meta.model_name or "")

    return view


def iter_rows(content: Iterable[bytes]) -> list[list[str]]:
    """Parse a streamed export back into rows (for tests and the benchmark)."""
    text = b"".join(content).decode()
    return list(csv.reader(text.splitlines()))
