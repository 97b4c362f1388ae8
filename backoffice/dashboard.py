"""The figures of the admin dashboard (the admin index): where every unit of money is, what
needs a person, and whether the jobs run.

Design: a fixed number of queries whatever the table sizes (seven, each grouped or
limited), and each figure comes with the URL of the filtered list behind it. No query
reads the accumulations by state: "where the money is" comes from the kept totals
(`payouts.totals`, written by the table's triggers and checked by reconcile), so it costs
the same at ten rows and at ten million; order tables, the chart (by batch and payout day)
and the owed balances use their indexes.
The jobs' last runs come from the job heartbeats (`backoffice.models.JobRun`); failed
Django-Q tasks from Django-Q's own table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.db import connection
from django.urls import reverse
from django.utils import timezone

from backoffice.reports import fee_income_days
from backoffice.services import REVERSAL_REASON
from ledger.services import account_balance
from payouts.admin.support import (
    STUCK_LIMIT_FIELDS,
    age,
    fmt_decimal,
    stuck_cutoffs,
    usd,
)
from payouts.formatting import amount_text
from payouts.models import ACCUMULATION_STATES, ApprovalRequest, FundedOrder
from payouts.services import runtime_settings_get
from payouts.totals import accumulation_totals

CHART_DAYS = 30
OWED_CLIENTS = 10
FAILED_TASKS = 5
ORDER_STATES = [s.value for s in FundedOrder.State]

# Orders per state with their stuck counts, platform USDT, unmatched webhooks and failed
# tasks: everything that is a count, in one round trip.
_COUNTS_SQL = """
SELECT 'batch', state, count(*), count(*) FILTER (WHERE {stuck}),
       coalesce(sum(eth_total), 0), coalesce(sum(usd_total), 0),
       coalesce(sum(usdt_received), 0), coalesce(sum(platform_usdt), 0)
FROM batches_conversionbatch GROUP BY state
UNION ALL
SELECT 'payout', state, count(*), count(*) FILTER (WHERE {stuck}),
       0, 0, coalesce(sum(usdt_amount), 0), 0
FROM payouts_payout GROUP BY state
UNION ALL
SELECT 'webhook', 'unmatched', count(*), count(*) FILTER (WHERE reason LIKE %(reversal)s),
       0, 0, 0, 0
FROM backoffice_webhookevent WHERE outcome = 'unmatched'
UNION ALL
SELECT 'task', 'failed', count(*), 0, 0, 0, 0, 0 FROM django_q_task WHERE NOT success
"""

_CHART_SQL = """
WITH days AS (
    SELECT generate_series(%(start)s::date, %(today)s::date, interval '1 day')::date AS d
), b AS (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS d, count(*) AS n, sum(usd_total) AS usd,
           sum(row_count) AS payments
    FROM batches_conversionbatch WHERE created_at >= %(start)s GROUP BY 1
), p AS (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS d, count(*) AS n, sum(usdt_amount) AS usdt
    FROM payouts_payout WHERE created_at >= %(start)s GROUP BY 1
)
SELECT days.d, coalesce(b.n, 0), coalesce(b.usd, 0), coalesce(b.payments, 0),
       coalesce(p.n, 0), coalesce(p.usdt, 0)
FROM days LEFT JOIN b USING (d) LEFT JOIN p USING (d) ORDER BY days.d
"""

# Clients whose converted, unpaid USDT reached their payout threshold (the payout sweep's
# own rule), largest first; the window columns count and sum all of them.
_OWED_SQL = """
SELECT c.id, c.reference, c.name, c.payout_threshold_usd, s.n, s.usdt,
       count(*) OVER (), sum(s.usdt) OVER (), c.unpaid_reason, c.unpaid_since
FROM (
    SELECT client_id, count(*) AS n, sum(usdt) AS usdt FROM payouts_accumulation
    WHERE state = 'converted' GROUP BY client_id
) s JOIN payouts_client c ON c.id = s.client_id
WHERE s.usdt > 0 AND s.usdt >= c.payout_threshold_usd
ORDER BY s.usdt DESC, c.reference LIMIT %s
"""

# The latest run and the latest successful run of each scheduled job (heartbeat table,
# index jobrun_name_started_idx), with the schedule's next due time.
_JOBS_SQL = """
SELECT s.id, s.name, s.next_run, r.id, r.started_at, r.finished_at, r.outcome, r.error,
       ok.started_at
FROM django_q_schedule s
LEFT JOIN LATERAL (
    SELECT id, started_at, finished_at, outcome, error FROM backoffice_jobrun
    WHERE name = s.name ORDER BY started_at DESC LIMIT 1
) r ON true
LEFT JOIN LATERAL (
    SELECT started_at FROM backoffice_jobrun
    WHERE name = s.name AND outcome = 'ok' ORDER BY started_at DESC LIMIT 1
) ok ON true
WHERE s.name = ANY(%s)
"""


def _url(name: str, *args: object) -> str:
    return reverse(f"admin:{name}", args=args)


def days_query(first: date, last: date) -> str:
    """`created_at__gte/__lt` for whole UTC days, as the admin's date filter writes them
    (aware times: a bare date would be read as a naive datetime)."""
    start = datetime.combine(first, time.min, tzinfo=UTC)
    end = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
    return urlencode({"created_at__gte": str(start), "created_at__lt": str(end)})


@dataclass(frozen=True)
class JobStatus:
    name: str
    every_minutes: int
    last_started: datetime | None
    last_finished: datetime | None
    outcome: str  # "ok", "failed", "running", "never ran", "not scheduled"
    error: str
    late: bool
    why: str
    url: str


def job_runs(runtime: Any, now: datetime | None = None) -> list[JobStatus]:
    """Last run and outcome of each scheduled job, from the job heartbeats, in one query.

    Late follows the watchdog's rule (`backoffice.operations.jobs_late`): no successful run
    within twice the interval, or never run although due two intervals ago."""
    from backoffice.schedules import SCHEDULES, job_minutes

    now = now or timezone.now()
    with connection.cursor() as cur:
        cur.execute(_JOBS_SQL, [[job.name for job in SCHEDULES]])
        rows = {row[1]: row for row in cur.fetchall()}
    runs_url = _url("backoffice_jobrun_changelist")
    statuses = []
    for job in SCHEDULES:
        every = job_minutes(job, runtime)
        limit = timedelta(minutes=2 * every)
        row = rows.get(job.name)
        if row is None:
            statuses.append(
                JobStatus(
                    job.name,
                    every,
                    None,
                    None,
                    "not scheduled",
                    "",
                    True,
                    "not scheduled: run manage.py setup_schedules",
                    runs_url,
                )
            )
            continue
        _sid, _name, next_run, run_id, started, finished, outcome, error, last_ok = row
        if last_ok is not None:
            late = now - last_ok > limit
            why = f"last successful run {age(last_ok, now)} ago" if late else ""
        else:
            late = next_run is not None and now - next_run > limit
            why = "has never run successfully" if late else ""
        statuses.append(
            JobStatus(
                name=job.name,
                every_minutes=every,
                last_started=started,
                last_finished=finished,
                outcome=outcome or "never ran",
                error=(error or "")[:200],
                late=late,
                why=why,
                url=f"{runs_url}?name={job.name}",
            )
        )
    return statuses


def failed_tasks(limit: int = FAILED_TASKS) -> list[dict[str, Any]]:
    from django_q.models import Failure

    return [
        {
            "name": task.name,
            "func": task.func,
            "stopped": task.stopped,
            "error": str(task.result)[:160],
            "url": _url("django_q_failure_change", task.id),
        }
        for task in Failure.objects.order_by("-stopped")[:limit]
    ]


def _compact_usd(value: Decimal) -> str:
    """Axis labels: $950, $12.5k, $1.2M."""
    for limit, suffix in ((Decimal(10**6), "M"), (Decimal(10**3), "k")):
        if value >= limit:
            return f"${value / limit:.1f}{suffix}"
    return f"${value:.0f}"


def _chart(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """An inline SVG bar chart: USD converted per day (bars) and batches per day (dots)."""
    width, height, top, bottom, left = 900, 180, 14, 24, 64
    plot_h = height - top - bottom
    n = max(1, len(rows))
    slot = (width - left - 8) / n
    max_usd = max([Decimal(r[2]) for r in rows] + [Decimal(1)])
    max_batches = max([int(r[1]) for r in rows] + [1])
    bars = []
    for i, (day, batches, usd_total, payments, payouts, payout_usdt) in enumerate(rows):
        # Pixel geometry only, never money; kept in Decimal like every figure on the page.
        bar_h = Decimal(usd_total) / max_usd * plot_h
        x = left + i * slot
        bars.append(
            {
                "x": round(x + slot * 0.12, 1),
                "w": round(slot * 0.76, 1),
                "y": round(top + plot_h - bar_h, 1),
                "h": round(max(bar_h, 0.0), 1),
                "cx": round(x + slot / 2, 1),
                "cy": round(top + plot_h - (int(batches) / max_batches) * plot_h, 1),
                "batches": int(batches),
                "label": day.strftime("%d %b") if i % 5 == 0 or i == n - 1 else "",
                "title": (
                    f"{day:%a %d %b}: {usd(usd_total)} converted in {batches} batches "
                    f"({payments} payments); {payouts} payouts, "
                    f"{fmt_decimal(payout_usdt, 2)} USDT"
                ),
                "url": f"{_url('batches_conversionbatch_changelist')}?{days_query(day, day)}",
            }
        )
    ticks = [
        {"y": round(top + plot_h - f * plot_h, 1), "label": _compact_usd(max_usd * Decimal(f))}
        for f in (0, 0.5, 1)
    ]
    return {
        "width": width,
        "height": height,
        "bars": bars,
        "ticks": ticks,
        "axis_y": top + plot_h,
        "left": left,
        "max_batches": max_batches,
        "label_y": height - 6,
    }


def _day_figures(chart_rows: list[tuple[Any, ...]], day: date) -> dict[str, Any]:
    """One day's line of the chart (batches, USD, payments, payouts) with links to its lists."""
    row = next((r for r in chart_rows if r[0] == day), None)
    return {
        "batches": row[1] if row else 0,
        "payments": row[3] if row else 0,
        "payouts": row[4] if row else 0,
        "usd": usd(row[2] if row else 0),
        "url": f"{_url('batches_conversionbatch_changelist')}?{days_query(day, day)}",
        "payouts_url": f"{_url('payouts_payout_changelist')}?{days_query(day, day)}",
    }


def _fees_chart(days: list[tuple[date, Decimal]], today: date) -> dict[str, Any]:
    """Fee income per day (USDT, from the ledger) as inline SVG bars."""
    width, height, top, bottom, left = 900, 120, 10, 20, 64
    plot_h = height - top - bottom
    slot = (width - left - 8) / max(1, len(days))
    top_value = max([v for _d, v in days] + [Decimal("0.000001")])
    reports = reverse("admin:reports")
    bars = []
    for i, (day, value) in enumerate(days):
        bar_h = value / top_value * plot_h if value > 0 else Decimal(0)
        bars.append(
            {
                "x": round(left + i * slot + slot * 0.12, 1),
                "w": round(slot * 0.76, 1),
                "y": round(top + plot_h - bar_h, 1),
                "h": round(bar_h, 1),
                "cx": round(left + i * slot + slot / 2, 1),
                "label": day.strftime("%d %b") if i % 5 == 0 or day == today else "",
                "title": f"{day:%a %d %b}: {amount_text(value, 'usdt')} USDT fee income",
                "url": f"{reports}?report=fees&from={day}&to={day}",
            }
        )
    total = sum((v for _d, v in days), Decimal(0))
    return {
        "width": width,
        "height": height,
        "left": left,
        "bars": bars,
        "axis_y": top + plot_h,
        "label_y": height - 4,
        "top": amount_text(top_value if total else Decimal(0), "usdt"),
        "top_y": top,
        "total": amount_text(total, "usdt"),
        "url": f"{reports}?report=fees&from={days[0][0]}&to={today}" if days else reports,
    }


_OPEN_ALERTS_SQL = """
SELECT id, kind, message, count(*) OVER () FROM backoffice_alert
WHERE status = 'open' ORDER BY last_seen_at DESC LIMIT 5
"""


def _open_alerts() -> dict[str, Any]:
    """Open alerts (few: one per incident), the newest five and how many, in one query."""
    with connection.cursor() as cur:
        cur.execute(_OPEN_ALERTS_SQL)
        rows = cur.fetchall()
    return {
        "count": rows[0][3] if rows else 0,
        "url": f"{_url('backoffice_alert_changelist')}?status__exact=open",
        "latest": [
            {"kind": kind, "message": message, "url": _url("backoffice_alert_change", pk)}
            for pk, kind, message, _count in rows
        ],
    }


# An open order whose last step failed and that waits for its retry: the signer or
# ChangeNOW is failing now, before the order is old enough to count as stuck.
_RETRYING_SQL = """
SELECT 'batch', id, state, last_error_code, retry_count, next_attempt_at
FROM batches_conversionbatch
WHERE state IN ('reserved', 'exchange_created', 'funds_sent', 'converting')
  AND retry_count > 0 AND last_error_code <> ''
UNION ALL
SELECT 'payout', id, state, last_error_code, retry_count, next_attempt_at
FROM payouts_payout
WHERE state IN ('reserved', 'exchange_created', 'funds_sent', 'converting')
  AND retry_count > 0 AND last_error_code <> ''
ORDER BY 5 DESC LIMIT 10
"""


def _retrying_orders() -> list[dict[str, Any]]:
    with connection.cursor() as cur:
        cur.execute(_RETRYING_SQL)
        rows = cur.fetchall()
    names = {"batch": "batches_conversionbatch_change", "payout": "payouts_payout_change"}
    return [
        {
            "kind": kind,
            "id": str(order_id)[:8],
            "state": state,
            "code": code,
            "retries": retries,
            "next": next_at,
            "url": _url(names[kind], order_id),
        }
        for kind, order_id, state, code, retries, next_at in rows
    ]


def dashboard_data(now: datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    runtime = runtime_settings_get()
    acc_url = _url("payouts_accumulation_changelist")
    batch_url = _url("batches_conversionbatch_changelist")
    payout_url = _url("payouts_payout_changelist")

    # 1. money per accumulation state -----------------------------------------------------
    money = accumulation_totals()
    pending = money["pending"]
    threshold = runtime.conversion_threshold_usd
    max_age = timedelta(minutes=runtime.max_pending_age_minutes)
    progress = min(100, int(pending.usd / threshold * 100)) if threshold else 0

    # 2. orders, stuck, webhooks, failed tasks ---------------------------------------------
    cutoffs = stuck_cutoffs(runtime, now)
    stuck_sql = " OR ".join(
        f"(state = %(s_{state})s AND state_changed_at < %(c_{state})s)"
        for state in STUCK_LIMIT_FIELDS
    )
    # Unmatched webhooks carry, in the stuck column, those that report a credited payment
    # refunded or partly paid.
    params: dict[str, Any] = {"reversal": f"{REVERSAL_REASON}%"}
    for state, cutoff in cutoffs.items():
        params[f"s_{state}"] = state
        params[f"c_{state}"] = cutoff
    orders: dict[str, dict[str, dict[str, Any]]] = {
        kind: {s: {"count": 0, "stuck": 0} for s in ORDER_STATES} for kind in ("batch", "payout")
    }
    # The platform's USDT is what the books say it earned (fee shares, dust, write-offs).
    platform_usdt = account_balance("platform_fees", "usdt")
    unmatched = reversals = failed = 0
    with connection.cursor() as cur:
        cur.execute(_COUNTS_SQL.format(stuck=stuck_sql), params)
        for kind, state, count, stuck, _eth, _usd, _usdt, _platform in cur.fetchall():
            if kind in orders:
                orders[kind][state] = {"count": count, "stuck": stuck}
            elif kind == "webhook":
                unmatched, reversals = count, stuck
            else:
                failed = count
    order_rows = [
        {
            "state": state,
            "batches": orders["batch"][state]["count"],
            "batches_stuck": orders["batch"][state]["stuck"],
            "payouts": orders["payout"][state]["count"],
            "payouts_stuck": orders["payout"][state]["stuck"],
            "batches_url": f"{batch_url}?state__exact={state}",
            "payouts_url": f"{payout_url}?state__exact={state}",
            "attention": state == "needs_attention",
        }
        for state in ORDER_STATES
    ]
    stuck_batches = sum(v["stuck"] for v in orders["batch"].values())
    stuck_payouts = sum(v["stuck"] for v in orders["payout"].values())

    # 3. the 30-day chart -------------------------------------------------------------------
    today: date = now.astimezone(UTC).date()
    start = today - timedelta(days=CHART_DAYS - 1)
    with connection.cursor() as cur:
        cur.execute(_CHART_SQL, {"start": start, "today": today})
        chart_rows = cur.fetchall()
    day_before = today - timedelta(days=1)
    fees_chart = _fees_chart(fee_income_days(days=CHART_DAYS, today=today), today)

    # 4. owed per client over threshold -----------------------------------------------------
    with connection.cursor() as cur:
        cur.execute(_OWED_SQL, [OWED_CLIENTS])
        owed_rows = cur.fetchall()
    owed = [
        {
            "reference": ref,
            "name": name,
            "threshold": usd(threshold_),
            "rows": n,
            "usdt": fmt_decimal(usdt_, 6),
            "url": f"{acc_url}?client={ref}&state__exact=converted",
            "client_url": _url("payouts_client_change", cid),
            # Kept by the last payout sweep; empty: the next sweep has not looked yet.
            "why": reason or "waiting for the next payout sweep",
            "since": since,
        }
        for cid, ref, name, threshold_, n, usdt_, _count, _total, reason, since in owed_rows
    ]
    owed_clients = owed_rows[0][6] if owed_rows else 0
    owed_total = Decimal(owed_rows[0][7]) if owed_rows else Decimal(0)

    # 5. jobs and failed tasks --------------------------------------------------------------
    jobs = job_runs(runtime, now)
    failures = failed_tasks() if failed else []

    money_rows = [
        {
            "state": state,
            "count": money[state].count,
            "eth": fmt_decimal(money[state].eth),
            "usd": fmt_decimal(money[state].usd, 2),
            "usdt": fmt_decimal(money[state].usdt, 6) if money[state].usdt else "—",
            "url": f"{acc_url}?state__exact={state}",
            "attention": state == "written_off" and money[state].count > 0,
        }
        for state in ACCUMULATION_STATES
    ]
    return {
        "now": now,
        "runtime": runtime,
        "pending": {
            "usd": usd(pending.usd),
            "eth": fmt_decimal(pending.eth),
            "count": pending.count,
            "threshold": usd(threshold),
            "progress": progress,
            "reached": pending.usd >= threshold,
            "oldest_age": age(pending.oldest, now) if pending.oldest else "—",
            "oldest_over": bool(pending.oldest and now - pending.oldest >= max_age),
            "max_age": age(now - max_age, now),
            "url": f"{acc_url}?state__exact=pending",
        },
        "money_rows": money_rows,
        "order_rows": order_rows,
        "attention": {
            "batches": orders["batch"]["needs_attention"]["count"],
            "payouts": orders["payout"]["needs_attention"]["count"],
            "stuck_batches": stuck_batches,
            "stuck_payouts": stuck_payouts,
            "unmatched": unmatched,
            "reversals": reversals,
            "failed_tasks": failed,
            "late_jobs": sum(1 for job in jobs if job.late),
            # Pending requests are few (one per action and order): an indexed count.
            "approvals": ApprovalRequest.objects.filter(state="pending").count(),
            "approvals_url": (f"{_url('payouts_approvalrequest_changelist')}?state__exact=pending"),
            "batches_url": f"{batch_url}?state__exact=needs_attention",
            "payouts_url": f"{payout_url}?state__exact=needs_attention",
            "stuck_batches_url": f"{batch_url}?stuck=yes",
            "stuck_payouts_url": f"{payout_url}?stuck=yes",
            "unmatched_url": (
                f"{_url('backoffice_webhookevent_changelist')}?outcome__exact=unmatched"
            ),
            "reversals_url": (
                f"{_url('backoffice_webhookevent_changelist')}?outcome__exact=unmatched"
                "&reversal=yes"
            ),
            "failed_url": _url("django_q_failure_changelist"),
        },
        "platform_usdt": fmt_decimal(platform_usdt, 6),
        "platform_url": f"{reverse('admin:ledger_account_changelist')}?q=platform_fees",
        "converted_usdt": fmt_decimal(money["converted"].usdt, 6),
        "converted_url": f"{acc_url}?state__exact=converted",
        "owed": owed,
        "owed_clients": owed_clients,
        "owed_total": fmt_decimal(owed_total, 6),
        "owed_more": max(0, owed_clients - len(owed)),
        "chart": _chart(chart_rows),
        "fees_chart": fees_chart,
        "open_alerts": _open_alerts(),
        "retrying": _retrying_orders(),
        "today": _day_figures(chart_rows, today),
        "yesterday": _day_figures(chart_rows, day_before),
        "jobs": jobs,
        "failures": failures,
        "pause": {
            "conversions": runtime.conversions_paused,
            "payouts": runtime.payouts_paused,
        },
    }
