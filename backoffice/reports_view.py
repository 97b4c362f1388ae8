"""The admin's Reports page: the three month-end reports with date pickers, on screen and
as CSV. Viewers and up (it only reads); the same functions as `manage.py report`."""

from __future__ import annotations

from datetime import UTC, date, timedelta
from decimal import Decimal
from typing import Any

from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from backoffice.reports import PERIODS, REPORTS, Report, ReportError, parse_day, report_build

PERMISSION = "ledger.view_ledgertransaction"
TITLES = {
    "fees": "Fee income",
    "payouts": "Completed payouts",
    "statement": "Client statement",
}
# Amount columns and the asset whose precision each is shown with (CSV keeps every digit).
MONEY_COLUMNS = {
    "fees_usdt": "usdt",
    "fees_eth": "eth",
    "usdt": "usdt",
    "usd_at_intake": "usd",
    "amount_in_client_currency": "any",
    "opening": "row",
    "credits": "row",
    "conversions": "row",
    "payouts": "row",
    "other": "row",
    "closing": "row",
}


def last_month(today: date) -> tuple[date, date]:
    first = today.replace(day=1)
    end = first - timedelta(days=1)
    return end.replace(day=1), end


def reports_view(request: HttpRequest, site: AdminSite) -> HttpResponse:
    if not request.user.has_perm(PERMISSION):
        raise PermissionDenied
    today = timezone.now().astimezone(UTC).date()
    default_start, default_end = last_month(today)
    query = request.GET
    name = query.get("report") or "fees"
    form = {
        "report": name,
        "start": query.get("from") or default_start.isoformat(),
        "end": query.get("to") or default_end.isoformat(),
        "by": query.get("by") or "day",
        "client": (query.get("client") or "").strip(),
    }
    error = ""
    report: Report | None = None
    try:
        report = report_build(
            name=name,
            start=parse_day(form["start"], field="from"),
            end=parse_day(form["end"], field="to"),
            by=form["by"],
            client=form["client"],
        )
    except ReportError as exc:
        error = str(exc)
    if report is not None and query.get("format") == "csv":
        response = HttpResponse(report.as_csv(), content_type="text/csv; charset=utf-8")
        filename = f"{report.name}-{form['start']}-{form['end']}.csv"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
    context = {
        **site.each_context(request),
        "title": "Reports",
        "subtitle": TITLES.get(name, "Reports"),
        "form": form,
        "reports": [(key, TITLES[key]) for key in REPORTS],
        "periods": PERIODS,
        "error": error,
        "report": report,
        "table": _table(report) if report is not None else None,
        "csv_query": _csv_query(request),
    }
    request.current_app = site.name
    return TemplateResponse(request, "admin/backoffice/reports.html", context)


def _csv_query(request: HttpRequest) -> str:
    query = request.GET.copy()
    query["format"] = "csv"
    return query.urlencode()


def _table(report: Report) -> dict[str, Any]:
    from payouts.formatting import amount_display

    money = [MONEY_COLUMNS.get(column) for column in report.columns]
    asset_at = report.columns.index("asset") if "asset" in report.columns else None
    currency_at = report.columns.index("currency") if "currency" in report.columns else None

    def cells(row: tuple[Any, ...]) -> list[dict[str, Any]]:
        out = []
        for index, value in enumerate(row):
            kind = money[index]
            if kind and isinstance(value, Decimal):
                asset = kind
                if kind == "row" and asset_at is not None:
                    asset = row[asset_at]
                elif kind == "any" and currency_at is not None:
                    asset = row[currency_at]
                out.append({"money": True, **amount_display(value, asset)})
            else:
                text = "" if value is None else str(value)
                if hasattr(value, "strftime"):
                    text = value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
                out.append({"money": False, "text": text, "hash": _is_hash(text)})
        return out

    return {
        "columns": [
            {"name": c.replace("_", " "), "numeric": bool(kind)}
            for c, kind in zip(report.columns, money, strict=True)
        ],
        "rows": [cells(row) for row in report.rows],
        "totals": cells(report.totals) if report.totals else None,
    }


def _is_hash(text: str) -> bool:
    """A transaction hash (shortened on screen, whole on hover and in CSV)."""
    bare = text.removeprefix("0x")
    return len(bare) == 64 and all(c in "0123456789abcdefABCDEF" for c in bare)
