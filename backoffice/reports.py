"""Month-end reports (DESIGN 12.7): fee income from the ledger, completed payouts, and a
per-client statement that ties to the ledger.

Dates are UTC calendar days and both ends are included: `--from 2026-11-01 --to
2026-11-30` is November. Every report is one set-based query whatever the number of rows;
the same functions feed `manage.py report`, the admin's Reports page and their CSV.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection

from integrations.assets import format_amount

REPORTS = ("fees", "payouts", "statement")
PERIODS = ("day", "month")
MAX_DAYS = 3 * 366  # a wider range is a typo more often than a wish


class ReportError(ValueError):
    """A report that cannot be made as asked; the message says what to change."""


@dataclass(frozen=True)
class Report:
    name: str
    title: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]]
    totals: tuple[Any, ...] | None = None

    def as_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow([_csv_value(v) for v in row])
        if self.totals is not None:
            writer.writerow([_csv_value(v) for v in self.totals])
        return out.getvalue()

    def as_text(self) -> str:
        table = [self.columns, *self.rows, *([self.totals] if self.totals else [])]
        cells = [[_csv_value(v) for v in row] for row in table]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]
        lines = [self.title]
        for index, row in enumerate(cells):
            lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _csv_value(value: Any) -> str:
    """Full precision, no exponent, trailing zeros trimmed; dates as ISO; None as empty."""
    if value is None:
        return ""
    if isinstance(value, Decimal):
        return format_amount(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def report_range(*, start: date | None, end: date | None) -> tuple[datetime, datetime]:
    """[start 00:00, end + 1 day 00:00) in UTC, checked."""
    if start is None or end is None:
        raise ReportError("both dates are required (YYYY-MM-DD)")
    if end < start:
        raise ReportError(f"the end date {end} is before the start date {start}")
    if (end - start).days > MAX_DAYS:
        raise ReportError(f"at most {MAX_DAYS} days per report")
    return (
        datetime.combine(start, time.min, tzinfo=UTC),
        datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC),
    )


def parse_day(text: str | None, *, field: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise ReportError(f"{field} must be a date as YYYY-MM-DD, not {text!r}") from None


def report_build(
    *,
    name: str,
    start: date | None,
    end: date | None,
    by: str = "day",
    client: str = "",
) -> Report:
    if name not in REPORTS:
        raise ReportError(f"unknown report {name!r}: one of {', '.join(REPORTS)}")
    if by not in PERIODS:
        raise ReportError(f"--by must be day or month, not {by!r}")
    since, until = report_range(start=start, end=end)
    assert start is not None and end is not None
    if name == "fees":
        return fees_report(start=start, end=end, since=since, until=until, by=by)
    if name == "payouts":
        return payouts_report(start=start, end=end, since=since, until=until, client=client)
    return statement_report(start=start, end=end, since=since, until=until, client=client)


# --- fee income ----------------------------------------------------------------------------

_FEES_SQL = """
SELECT date_trunc(%(by)s, t.created_at AT TIME ZONE 'UTC')::date AS period, a.asset,
       -sum(l.amount), count(DISTINCT t.id)
FROM ledger_account a
JOIN ledger_leg l ON l.account_id = a.id
JOIN ledger_ledgertransaction t ON t.id = l.transaction_id
WHERE a.name = 'platform_fees' AND t.created_at >= %(since)s AND t.created_at < %(until)s
GROUP BY 1, 2
"""


def _periods(start: date, end: date, by: str) -> list[date]:
    if by == "day":
        return [start + timedelta(days=i) for i in range((end - start).days + 1)]
    out, cursor = [], start.replace(day=1)
    while cursor <= end:
        out.append(cursor)
        cursor = (cursor + timedelta(days=32)).replace(day=1)
    return out


def fees_report(*, start: date, end: date, since: datetime, until: datetime, by: str) -> Report:
    """Platform fee income per day or month, from the ledger's `platform_fees` account (in
    its natural sign: income is positive). Every period of the range is listed, zeros too."""
    with connection.cursor() as cur:
        cur.execute(_FEES_SQL, {"by": by, "since": since, "until": until})
        found = {(period, asset): (Decimal(total), n) for period, asset, total, n in cur}
    rows = []
    for period in _periods(start, end, by):
        usdt, n_usdt = found.get((period, "usdt"), (Decimal(0), 0))
        eth, n_eth = found.get((period, "eth"), (Decimal(0), 0))
        label = period.isoformat() if by == "day" else period.strftime("%Y-%m")
        rows.append((label, usdt, eth, n_usdt + n_eth))
    totals = (
        "total",
        sum((r[1] for r in rows), Decimal(0)),
        sum((r[2] for r in rows), Decimal(0)),
        sum(r[3] for r in rows),
    )
    return Report(
        "fees",
        f"Platform fee income per {by}, {start} to {end} (UTC)",
        (by, "fees_usdt", "fees_eth", "postings"),
        rows,
        totals,
    )


# --- completed payouts ---------------------------------------------------------------------

_PAYOUTS_SQL = """
SELECT p.completed_at, p.id, c.reference, c.name, p.usdt_amount, p.currency, p.network,
       p.amount_to,
       CASE WHEN p.exchange_id = '' THEN tr.hash ELSE coalesce(ea.payout_hash, '') END,
       CASE WHEN p.exchange_id = '' THEN '' ELSE tr.hash END,
       p.exchange_id, u.usd
FROM payouts_payout p
JOIN payouts_client c ON c.id = p.client_id
LEFT JOIN LATERAL (
    SELECT sum(usd) AS usd FROM payouts_accumulation WHERE payout_id = p.id
) u ON true
LEFT JOIN LATERAL (
    SELECT coalesce(nullif(mined_hash, ''), tx_hash) AS hash FROM payouts_transfer
    WHERE payout_id = p.id AND state = 'mined' ORDER BY id DESC LIMIT 1
) tr ON true
LEFT JOIN LATERAL (
    SELECT payout_hash FROM payouts_exchangeattempt
    WHERE payout_id = p.id AND exchange_id = p.exchange_id ORDER BY id DESC LIMIT 1
) ea ON true
WHERE p.state = 'completed' AND p.completed_at >= %(since)s AND p.completed_at < %(until)s
  AND (%(client)s = '' OR c.reference = %(client)s)
ORDER BY p.completed_at, p.id
"""


def _payout_row(row: tuple[Any, ...]) -> tuple[Any, ...]:
    done, pid, ref, name, usdt, currency, network, amount_to, to_hash, funding, xid, usd = row
    received = Decimal(amount_to) if amount_to is not None else None
    return (
        done, str(pid), ref, name, Decimal(usdt), currency, network, received,
        to_hash or "", funding or "", xid, Decimal(usd or 0),
    )  # fmt: skip


def payouts_report(
    *, start: date, end: date, since: datetime, until: datetime, client: str
) -> Report:
    """Payouts completed in the range, by completion time: what the client received in its
    currency, the hash of that payment (ours for a direct USDT transfer, ChangeNOW's payout
    otherwise, with our funding transfer beside it), and the USD value of its payments when
    they were credited."""
    with connection.cursor() as cur:
        cur.execute(_PAYOUTS_SQL, {"since": since, "until": until, "client": client})
        rows = [_payout_row(row) for row in cur]
    totals = (
        f"{len(rows)} payouts", "", "", "", sum((r[4] for r in rows), Decimal(0)),
        "", "", None, "", "", "", sum((r[11] for r in rows), Decimal(0)),
    )  # fmt: skip
    who = f" for {client}" if client else ""
    return Report(
        "payouts",
        f"Completed payouts{who}, {start} to {end} (UTC, by completion time)",
        (
            "completed_at",
            "payout_id",
            "client",
            "client_name",
            "usdt",
            "currency",
            "network",
            "amount_in_client_currency",
            "tx_hash",
            "funding_tx_hash",
            "exchange_id",
            "usd_at_intake",
        ),  # fmt: skip
        rows,
        totals,
    )


# --- per-client statement ------------------------------------------------------------------

# Client accounts are liabilities: shown in their natural sign (what we owe is positive).
_STATEMENT_SQL = """
SELECT substr(a.name, 9) AS reference, a.asset,
       -coalesce(sum(l.amount) FILTER (WHERE t.created_at < %(since)s), 0),
       -coalesce(sum(l.amount) FILTER (WHERE t.created_at >= %(since)s
            AND t.created_at < %(until)s AND t.kind = 'intake'), 0),
       -coalesce(sum(l.amount) FILTER (WHERE t.created_at >= %(since)s
            AND t.created_at < %(until)s AND t.kind = 'batch_completed'), 0),
       -coalesce(sum(l.amount) FILTER (WHERE t.created_at >= %(since)s
            AND t.created_at < %(until)s AND t.kind = 'payout_completed'), 0),
       -coalesce(sum(l.amount) FILTER (WHERE t.created_at >= %(since)s
            AND t.created_at < %(until)s
            AND t.kind NOT IN ('intake', 'batch_completed', 'payout_completed')), 0),
       -coalesce(sum(l.amount) FILTER (WHERE t.created_at < %(until)s), 0)
FROM ledger_account a
JOIN ledger_leg l ON l.account_id = a.id
JOIN ledger_ledgertransaction t ON t.id = l.transaction_id
WHERE a.name LIKE 'clients:%%' AND (%(account)s = '' OR a.name = %(account)s)
GROUP BY a.name, a.asset
ORDER BY a.name, a.asset
"""


def statement_report(
    *, start: date, end: date, since: datetime, until: datetime, client: str
) -> Report:
    """Per client and asset: opening balance, credits (payments credited), conversions (ETH
    out, USDT in), payouts, other movements (write-offs, refunds), closing balance. Every
    figure is read from the client's ledger account, so the closing balance is the ledger's."""
    account = f"clients:{client}" if client else ""
    with connection.cursor() as cur:
        cur.execute(_STATEMENT_SQL, {"since": since, "until": until, "account": account})
        rows = [
            (ref, asset, *(Decimal(v) for v in values))
            for ref, asset, *values in cur
            if any(Decimal(v) for v in values)
        ]
    if client and not rows:
        from payouts.models import Client

        if not Client.objects.filter(reference=client).exists():
            raise ReportError(f"no client with reference {client!r}")
    who = client or "every client"
    return Report(
        "statement",
        f"Statement of {who}, {start} to {end} (UTC): what we owe, per asset",
        ("client", "asset", "opening", "credits", "conversions", "payouts", "other", "closing"),
        rows,
    )


def fee_income_days(*, days: int, today: date) -> list[tuple[date, Decimal]]:
    """USDT fee income of each of the last `days` days, for the dashboard's chart."""
    start = today - timedelta(days=days - 1)
    report = fees_report(
        start=start,
        end=today,
        since=datetime.combine(start, time.min, tzinfo=UTC),
        until=datetime.combine(today + timedelta(days=1), time.min, tzinfo=UTC),
        by="day",
    )
    return [(date.fromisoformat(r[0]), r[1]) for r in report.rows]
