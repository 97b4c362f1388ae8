"""Operations: job heartbeats, alerts and the watchdog (`reconcile` is beside it, in
`backoffice.reconcile`).

- The watchdog turns stuck orders, exhausted retries, missed job runs, repeated signature
  failures and a short host wallet into alerts, one per incident.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

import requests
from django.conf import settings
from django.core.mail import mail_admins
from django.db import IntegrityError, transaction
from django.utils import timezone

from backoffice.models import Alert, JobRun, WebhookEvent

log = logging.getLogger("backoffice.operations")


# --- job heartbeats --------------------------------------------------------------------------


@contextmanager
def job_heartbeat(name: str) -> Iterator[dict[str, Any]]:
    """Record one run of a scheduled job; the caller fills the yielded summary. An exception
    makes the run `failed` (with the error) and is re-raised: never a silent zero."""
    run = JobRun.objects.create(name=name, started_at=timezone.now())
    summary: dict[str, Any] = {}
    started = time.monotonic()
    try:
        yield summary
    except BaseException as exc:
        JobRun.objects.filter(pk=run.pk).update(
            outcome=JobRun.Outcome.FAILED,
            finished_at=timezone.now(),
            summary=_jsonable(summary),
            error=f"{type(exc).__name__}: {exc}"[:4000],
        )
        log.error("job failed", extra={"job": name, "error": str(exc)[:500]})
        raise
    JobRun.objects.filter(pk=run.pk).update(
        outcome=JobRun.Outcome.OK, finished_at=timezone.now(), summary=_jsonable(summary)
    )
    log.info(
        "job run",
        extra={
            "job": name,
            "seconds": round(time.monotonic() - started, 3),
            "summary": _flat(summary),
        },
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _flat(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if isinstance(v, str | int | bool)}


def job_last_runs() -> dict[str, JobRun]:
    """The latest run of each job name (one query)."""
    runs = JobRun.objects.order_by("name", "-started_at").distinct("name")
    return {run.name: run for run in runs}


def job_last_ok(names: list[str]) -> dict[str, Any]:
    rows = (
        JobRun.objects.filter(name__in=names, outcome=JobRun.Outcome.OK)
        .order_by("name", "-started_at")
        .distinct("name")
        .values_list("name", "started_at")
    )
    return dict(rows)


def jobs_late(*, now: Any = None) -> list[tuple[str, str]]:
    """(job, why) for each scheduled job without a successful run within twice its interval.

    A job that never ran is late once its schedule's first due time is two intervals past
    (a freshly bootstrapped system is not alarmed)."""
    from django_q.models import Schedule

    from backoffice.schedules import SCHEDULES, job_minutes
    from payouts.services import runtime_settings_get

    now = now or timezone.now()
    runtime = runtime_settings_get()
    names = [job.name for job in SCHEDULES]
    last_ok = job_last_ok(names)
    due = dict(Schedule.objects.filter(name__in=names).values_list("name", "next_run"))
    late = []
    for job in SCHEDULES:
        limit = timedelta(minutes=2 * job_minutes(job, runtime))
        last = last_ok.get(job.name)
        if last is not None:
            if now - last > limit:
                late.append((job.name, f"last successful run {last:%Y-%m-%d %H:%M:%S} UTC"))
        elif job.name not in due:
            late.append((job.name, "is not scheduled (run manage.py setup_schedules)"))
        elif due[job.name] is not None and now - due[job.name] > limit:
            late.append((job.name, "has never run successfully"))
    return late


# --- alerts ----------------------------------------------------------------------------------


def alert_raise(
    *, key: str, kind: str, message: str, link: str = "", severity: str = "error"
) -> Alert:
    """Open an alert for this incident, or refresh the open one (no second notification)."""
    now = timezone.now()
    existing = Alert.objects.filter(key=key).exclude(status=Alert.Status.RESOLVED).first()
    if existing is not None:
        Alert.objects.filter(pk=existing.pk).update(last_seen_at=now, message=message)
        return existing
    try:
        with transaction.atomic():
            alert = Alert.objects.create(
                key=key, kind=kind, message=message, link=link, severity=severity
            )
    except IntegrityError:  # raised concurrently by another worker
        return Alert.objects.filter(key=key).exclude(status=Alert.Status.RESOLVED).get()
    alert_notify(alert)
    return alert


def alert_notify(alert: Alert) -> None:
    """Email ADMINS and post to ALERT_WEBHOOK_URL (Slack-compatible JSON). A failing channel
    is logged, never allowed to hide the alert, which stays listed in admin."""
    text = f"[{alert.severity}] {alert.kind}: {alert.message}"
    url = _absolute(alert.link)
    if url:
        text += f"\n{url}"
    try:
        mail_admins(f"{alert.kind}: {alert.message[:120]}", text, fail_silently=False)
    except Exception as exc:  # noqa: BLE001 - a mail outage must not stop the watchdog
        log.error("alert email failed", extra={"alert": alert.pk, "error": str(exc)[:300]})
    if settings.ALERT_WEBHOOK_URL:
        try:
            requests.post(settings.ALERT_WEBHOOK_URL, json={"text": text}, timeout=5)
        except requests.RequestException as exc:
            log.error("alert webhook failed", extra={"alert": alert.pk, "error": str(exc)[:300]})
    Alert.objects.filter(pk=alert.pk).update(notified_at=timezone.now())


def _absolute(link: str) -> str:
    base = getattr(settings, "SITE_URL", "")
    return f"{base.rstrip('/')}{link}" if link and base else link


def alerts_resolve_cleared(*, prefix: str, still_open: set[str], actor: str) -> int:
    """Resolve the open alerts under `prefix` whose condition is no longer seen."""
    stale = (
        Alert.objects.filter(key__startswith=prefix)
        .exclude(status=Alert.Status.RESOLVED)
        .exclude(key__in=still_open)
    )
    return stale.update(status=Alert.Status.RESOLVED, resolved_at=timezone.now(), resolved_by=actor)


def alert_acknowledge(*, alert_id: int, user: Any) -> bool:
    return bool(
        Alert.objects.filter(pk=alert_id, status=Alert.Status.OPEN).update(
            status=Alert.Status.ACKNOWLEDGED, acknowledged_at=timezone.now(), acknowledged_by=user
        )
    )


def alert_resolve(*, alert_id: int, user: Any) -> bool:
    return bool(
        Alert.objects.filter(pk=alert_id)
        .exclude(status=Alert.Status.RESOLVED)
        .update(
            status=Alert.Status.RESOLVED,
            resolved_at=timezone.now(),
            resolved_by=f"user:{user.get_username()}",
        )
    )


# --- watchdog --------------------------------------------------------------------------------

SIGNATURE_FAILURE_WINDOW = timedelta(minutes=15)
SIGNATURE_FAILURE_LIMIT = 5
WAITING_AFTER_FUNDS = timedelta(minutes=30)


@dataclass
class WatchdogReport:
    raised: list[str] = field(default_factory=list)
    resolved: int = 0
    totals_folded: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "alerts": self.raised,
            "resolved": self.resolved,
            "totals_folded": self.totals_folded,
        }


def _order_link(kind: str, order_id: object) -> str:
    model = "conversionbatch" if kind == "batch" else "payout"
    app = "batches" if kind == "batch" else "payouts"
    return f"/admin/{app}/{model}/{order_id}/change/"


def watchdog_run(
    *, wallet_balances: Callable[[], tuple[Decimal, Decimal]] | None = None
) -> dict[str, Any]:
    from batches.models import ConversionBatch
    from payouts.approvals import approvals_expire
    from payouts.models import Payout
    from payouts.services import runtime_settings_get
    from payouts.totals import accumulation_totals_compact

    approvals_expire()  # dual-control requests older than 24 h end here
    runtime = runtime_settings_get()
    now = timezone.now()
    report = WatchdogReport()
    # The dashboard sums the kept totals' delta rows: fold them on the watchdog's beat.
    report.totals_folded = accumulation_totals_compact()["folded"]
    seen: set[str] = set()

    def raise_(key: str, kind: str, message: str, link: str = "") -> None:
        seen.add(key)
        report.raised.append(key)
        alert_raise(key=key, kind=kind, message=message, link=link)

    limits = {
        "reserved": runtime.stuck_reserved_minutes,
        "exchange_created": runtime.stuck_exchange_created_minutes,
        "funds_sent": runtime.stuck_funds_sent_minutes,
        "converting": runtime.stuck_converting_minutes,
    }
    for kind, model in (("batch", ConversionBatch), ("payout", Payout)):
        for state, minutes in limits.items():
            stuck = model.objects.filter(
                state=state, state_changed_at__lt=now - timedelta(minutes=minutes)
            ).values_list("pk", "state_changed_at", "provider_status")
            for pk, since, provider_status in stuck:
                raise_(
                    f"order:{kind}:{pk}:stuck:{state}",
                    "order_stuck",
                    f"{kind} {pk} has been {state} since {since:%Y-%m-%d %H:%M} UTC "
                    f"(limit {minutes} min; exchange status {provider_status or 'unknown'})",
                    _order_link(kind, pk),
                )
        waiting = model.objects.filter(
            state="funds_sent",
            provider_status__in=["new", "waiting"],
            state_changed_at__lt=now - WAITING_AFTER_FUNDS,
        ).values_list("pk", "exchange_id")
        for pk, exchange_id in waiting:
            raise_(
                f"order:{kind}:{pk}:waiting_after_funds",
                "deposit_not_seen",
                f"exchange {exchange_id} of {kind} {pk} still waits for our deposit",
                _order_link(kind, pk),
            )
        attention = model.objects.filter(state="needs_attention").values_list(
            "pk", "last_error_code", "last_error"
        )
        for pk, code, error in attention:
            raise_(
                f"order:{kind}:{pk}:needs_attention",
                "needs_attention",
                f"{kind} {pk} needs attention ({code or 'no code'}): {error[:300]}",
                _order_link(kind, pk),
            )
    for name, why in jobs_late(now=now):
        raise_(f"job:{name}:late", "job_missed", f"scheduled job {name} {why}")

    failures = WebhookEvent.objects.filter(
        outcome=WebhookEvent.Outcome.REJECTED,
        signature_valid=False,
        received_at__gte=now - SIGNATURE_FAILURE_WINDOW,
    ).count()
    if failures >= SIGNATURE_FAILURE_LIMIT:
        raise_(
            "webhooks:signature_failures",
            "webhook_signature_failures",
            f"{failures} webhook deliveries with bad signatures in the last "
            f"{int(SIGNATURE_FAILURE_WINDOW.total_seconds() // 60)} minutes",
            "/admin/backoffice/webhookevent/?outcome__exact=rejected",
        )

    _check_wallet(raise_, wallet_balances)
    for prefix in ("order:", "job:", "webhooks:", "wallet:"):
        report.resolved += alerts_resolve_cleared(
            prefix=prefix,
            still_open={k for k in seen if k.startswith(prefix)},
            actor="system:watchdog",
        )
    return report.as_json()


def wallet_needs() -> tuple[Decimal, Decimal]:
    """ETH and USDT that open orders will still send from the host wallet."""
    from batches.models import ConversionBatch
    from payouts.models import Payout

    unsent = ["reserved", "exchange_created"]
    eth = sum(
        ConversionBatch.objects.filter(state__in=unsent).values_list("eth_total", flat=True),
        Decimal(0),
    )
    usdt = sum(
        Payout.objects.filter(state__in=unsent).values_list("usdt_amount", flat=True), Decimal(0)
    )
    return eth, usdt


def _live_wallet_balances() -> tuple[Decimal, Decimal]:
    from payouts.engine import wallet

    client = wallet()
    return client.get_balance(), client.get_token_balance()


def _check_wallet(
    raise_: Callable[..., None], balances: Callable[[], tuple[Decimal, Decimal]] | None
) -> None:
    from integrations.errors import ProviderError

    eth_need, usdt_need = wallet_needs()
    if not eth_need and not usdt_need:
        return
    try:
        eth, usdt = (balances or _live_wallet_balances)()
    except ProviderError as exc:
        raise_("wallet:unreachable", "wallet_unreachable", f"host wallet balance unreadable: {exc}")
        return
    if eth < eth_need:
        raise_(
            "wallet:eth_low",
            "wallet_balance_low",
            f"host wallet holds {eth} ETH, open batches need {eth_need} ETH (plus gas)",
        )
    if usdt < usdt_need:
        raise_(
            "wallet:usdt_low",
            "wallet_balance_low",
            f"host wallet holds {usdt} USDT, open payouts need {usdt_need} USDT",
        )
