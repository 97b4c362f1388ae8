"""Operations: job heartbeats, alerts, the watchdog, `reconcile` and health.

- `reconcile` proves every unit of money is accounted for (DESIGN.md section 6): each
  invariant is one set-based query returning the offending objects, plus a comparison of
  our open and recent orders with ChangeNOW and with the chain.
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
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from backoffice.models import Alert, JobRun, WebhookEvent

log = logging.getLogger("backoffice.operations")


@dataclass(frozen=True)
class Breach:
    invariant: str
    object: str
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"invariant": self.invariant, "object": self.object, "detail": self.detail}


# (invariant, SQL returning (object, detail) rows)
CHECKS: tuple[tuple[str, str], ...] = (
    (
        "1 state agrees with links",
        """
        SELECT 'accumulation:' || a.id,
               a.state || ' but batch ' || coalesce(b.state, 'none') || ', payout '
               || coalesce(p.state, 'none')
        FROM payouts_accumulation a
        LEFT JOIN batches_conversionbatch b ON b.id = a.batch_id
        LEFT JOIN payouts_payout p ON p.id = a.payout_id
        WHERE (a.state = 'pending' AND (a.batch_id IS NOT NULL OR a.payout_id IS NOT NULL))
           OR (a.state = 'converting' AND (b.state IS NULL OR b.state NOT IN
                 ('reserved', 'exchange_created', 'funds_sent', 'converting',
                  'needs_attention')))
           OR (a.state IN ('converted', 'paying', 'paid')
               AND (a.usdt IS NULL OR b.state IS DISTINCT FROM 'completed'))
           OR (a.state = 'paying' AND (p.state IS NULL OR p.state NOT IN
                 ('reserved', 'exchange_created', 'funds_sent', 'converting',
                  'needs_attention')))
           OR (a.state = 'paid' AND p.state IS DISTINCT FROM 'completed')
           OR (a.state = 'converted' AND a.payout_id IS NOT NULL)
        """,
    ),
    (
        "2 batch rows match its totals",
        """
        SELECT 'batch:' || b.id,
               'rows ' || coalesce(r.n, 0) || ' / ' || coalesce(r.eth, 0) || ' ETH, batch says '
               || b.row_count || ' / ' || b.eth_total
        FROM batches_conversionbatch b
        LEFT JOIN (
            SELECT batch_id, count(*) AS n, sum(eth) AS eth FROM payouts_accumulation
            WHERE batch_id IS NOT NULL GROUP BY batch_id
        ) r ON r.batch_id = b.id
        WHERE b.state NOT IN ('failed', 'force_closed')
          AND (coalesce(r.n, 0) <> b.row_count OR coalesce(r.eth, 0) <> b.eth_total)
        """,
    ),
    (
        "2 completed batch split sums to the amount received",
        """
        SELECT 'batch:' || b.id,
               'clients ' || coalesce(r.usdt, 0) || ' + platform ' || b.platform_usdt
               || ' <> received ' || b.usdt_received
        FROM batches_conversionbatch b
        LEFT JOIN (
            SELECT batch_id, sum(usdt) AS usdt FROM payouts_accumulation
            WHERE batch_id IS NOT NULL GROUP BY batch_id
        ) r ON r.batch_id = b.id
        WHERE b.state = 'completed'
          AND coalesce(r.usdt, 0) + b.platform_usdt <> b.usdt_received
        """,
    ),
    (
        "2 batch sent exactly its ETH",
        """
        SELECT 'batch:' || b.id, 'transfer ' || t.tx_hash || ' sent ' || t.amount || ' '
               || t.asset || ' to ' || t.to_address || ', batch holds ' || b.eth_total
               || ' ETH for ' || b.payin_address
        FROM batches_conversionbatch b JOIN payouts_transfer t ON t.batch_id = b.id
        WHERE t.state IN ('signed', 'broadcast', 'mined')
          AND (t.amount <> b.eth_total OR t.asset <> 'eth' OR t.to_address <> b.payin_address)
        """,
    ),
    (
        "3 payout rows match its amount",
        """
        SELECT 'payout:' || p.id,
               'rows ' || coalesce(r.n, 0) || ' / ' || coalesce(r.usdt, 0)
               || ' USDT, payout says ' || p.row_count || ' / ' || p.usdt_amount
        FROM payouts_payout p
        LEFT JOIN (
            SELECT payout_id, count(*) AS n, sum(usdt) AS usdt FROM payouts_accumulation
            WHERE payout_id IS NOT NULL GROUP BY payout_id
        ) r ON r.payout_id = p.id
        WHERE p.state NOT IN ('failed', 'force_closed')
          AND (coalesce(r.n, 0) <> p.row_count OR coalesce(r.usdt, 0) <> p.usdt_amount)
        """,
    ),
    (
        "3 payout sent exactly its amount",
        """
        SELECT 'payout:' || p.id, 'transfer ' || t.tx_hash || ' sent ' || t.amount || ' '
               || t.asset || ', payout holds ' || p.usdt_amount || ' USDT'
        FROM payouts_payout p JOIN payouts_transfer t ON t.payout_id = p.id
        WHERE t.state IN ('signed', 'broadcast', 'mined')
          AND (t.amount <> p.usdt_amount OR t.asset <> 'usdt')
        """,
    ),
    (
        "4 at most one live transaction per order",
        """
        SELECT coalesce('batch:' || batch_id::text, 'payout:' || payout_id::text),
               count(*) || ' live transfers'
        FROM payouts_transfer WHERE state IN ('signed', 'broadcast', 'mined')
        GROUP BY batch_id, payout_id HAVING count(*) > 1
        """,
    ),
    (
        "4 funds only to a stored payin address",
        """
        SELECT 'payout:' || p.id, 'transfer to ' || t.to_address || ' but destination is '
               || CASE WHEN p.currency = 'usdt' AND p.network = 'eth' THEN p.address
                       ELSE p.payin_address END
        FROM payouts_payout p JOIN payouts_transfer t ON t.payout_id = p.id
        WHERE t.state IN ('signed', 'broadcast', 'mined')
          AND t.to_address <> CASE WHEN p.currency = 'usdt' AND p.network = 'eth' THEN p.address
                                   ELSE p.payin_address END
        """,
    ),
    (
        "5 terminal orders never change",
        """
        SELECT e.object_type || ':' || e.object_id,
               e.kind || ' ' || e.from_state || '->' || e.to_state || ' at ' || e.created_at
               || ' after it became ' || t.to_state
        FROM payouts_auditevent e
        JOIN (
            SELECT object_type, object_id, min(id) AS id, min(to_state) AS to_state
            FROM payouts_auditevent
            WHERE object_type IN ('conversionbatch', 'payout') AND kind = 'transition'
              AND to_state IN ('completed', 'failed', 'force_closed')
            GROUP BY object_type, object_id
        ) t ON t.object_type = e.object_type AND t.object_id = e.object_id
        WHERE e.id > t.id AND e.kind = 'transition'
        """,
    ),
    (
        "6 conservation of ETH and USDT",
        """
        SELECT 'totals', 'credited ' || credited || ' ETH <> accounted ' || accounted
        FROM (
            SELECT sum(eth) AS credited,
                   sum(eth) FILTER (WHERE state IN ('pending', 'converting', 'converted',
                                                    'paying', 'paid', 'written_off'))
                   AS accounted
            FROM payouts_accumulation
        ) s WHERE credited IS DISTINCT FROM accounted
        UNION ALL
        SELECT 'totals', 'USDT received ' || received || ' <> clients ' || clients
               || ' + platform ' || platform
        FROM (
            SELECT coalesce(sum(b.usdt_received), 0) AS received,
                   coalesce(sum(b.platform_usdt), 0) AS platform,
                   (SELECT coalesce(sum(a.usdt), 0) FROM payouts_accumulation a
                    JOIN batches_conversionbatch x ON x.id = a.batch_id
                    WHERE x.state = 'completed') AS clients
            FROM batches_conversionbatch b WHERE b.state = 'completed'
        ) u WHERE received <> clients + platform
        """,
    ),
)


def reconcile_breaches(*, limit_per_check: int = 100) -> list[Breach]:
    breaches: list[Breach] = []
    with connection.cursor() as cur:
        for invariant, sql in CHECKS:
            cur.execute(f"{sql} LIMIT %s", [limit_per_check])  # noqa: S608 - constant SQL
            breaches.extend(Breach(invariant, str(obj), str(detail)) for obj, detail in cur)
    return breaches


RECENT = timedelta(days=1)


def provider_breaches(*, now: Any = None) -> list[Breach]:
    """Our open and recently completed orders against ChangeNOW (by id) and the chain (the
    receipt of each transfer), and ChangeNOW's partner list of the last day against our
    orders. A provider that cannot be read is itself a breach: reconcile never guesses."""
    from integrations.errors import ProviderError
    from payouts import engine
    from payouts.models import ExchangeAttempt, Transfer

    now = now or timezone.now()
    since = now - RECENT
    breaches: list[Breach] = []
    cn, wallet = engine.changenow(), engine.wallet()
    for kind in engine.KINDS.values():
        orders = kind.model.objects.filter(
            state__in=[*engine.OPEN_STATES, "needs_attention", "completed"],
            state_changed_at__gte=since,
        ).exclude(exchange_id="") | kind.model.objects.filter(state__in=engine.OPEN_STATES).exclude(
            exchange_id=""
        )
        for order in orders.distinct():
            name = f"{kind.name}:{order.pk}"
            try:
                exchange = cn.get_exchange(order.exchange_id)
            except ProviderError as exc:
                breaches.append(Breach("provider: ChangeNOW readable", name, str(exc)))
                continue
            spec = kind.exchange_spec(order)
            if spec is not None and exchange.expected_amount_from not in (None, spec.amount_from):
                breaches.append(
                    Breach(
                        "provider: exchange amount",
                        name,
                        f"ChangeNOW expects {exchange.expected_amount_from}, "
                        f"we hold {spec.amount_from}",
                    )
                )
            if exchange.payin_address and exchange.payin_address != order.payin_address:
                breaches.append(
                    Breach(
                        "provider: payin address",
                        name,
                        f"ChangeNOW {exchange.payin_address} <> stored {order.payin_address}",
                    )
                )
            if order.state == "completed" and exchange.status != "finished":
                breaches.append(
                    Breach(
                        "provider: completed orders are finished",
                        name,
                        f"completed here, {exchange.status} at ChangeNOW",
                    )
                )
            if (
                exchange.amount_from is not None
                and spec is not None
                and (exchange.amount_from > spec.amount_from)
            ):
                breaches.append(
                    Breach(
                        "provider: one deposit per order",
                        name,
                        f"ChangeNOW received {exchange.amount_from}, we sent {spec.amount_from}",
                    )
                )
    transfers = Transfer.objects.filter(
        state__in=["broadcast", "mined"], created_at__gte=since
    ).exclude(tx_hash="")
    for transfer in transfers:
        name = f"transfer:{transfer.tx_hash}"
        try:
            receipt = wallet.get_receipt(transfer.tx_hash)
        except ProviderError as exc:
            breaches.append(Breach("provider: chain readable", name, str(exc)))
            continue
        if receipt is None:
            continue  # not mined yet: the watchdog follows stuck transfers
        if not receipt.succeeded:
            breaches.append(Breach("provider: transfer succeeded", name, "reverted on chain"))
        expected_to = (
            transfer.to_address if transfer.asset == "eth" else settings.USDT_CONTRACT_ADDRESS
        )
        if receipt.to and receipt.to.lower() != expected_to.lower():
            breaches.append(
                Breach(
                    "provider: transfer destination",
                    name,
                    f"mined to {receipt.to}, expected {expected_to}",
                )
            )
    known = set(
        ExchangeAttempt.objects.exclude(exchange_id="").values_list("exchange_id", flat=True)
    )
    try:
        listed = _partner_exchanges(cn, since)
    except ProviderError as exc:
        breaches.append(Breach("provider: partner exchange list", "changenow", str(exc)))
        return breaches
    for item in listed:
        ids = {item.request_id, item.exchange_id} - {None}
        # An exchange that never received funds is harmless by design (a create whose answer
        # was lost is retried); one that moved past waiting is money we cannot account for.
        if not ids & known and item.status not in UNFUNDED_STATUSES:
            breaches.append(
                Breach(
                    "provider: every exchange is ours",
                    f"exchange:{item.id}",
                    f"ChangeNOW lists exchange {item.id} ({item.status}) that no order owns",
                )
            )
        raw = item.raw or {}
        for extra in ("repeatedExchangesInfo", "relatedExchangesInfo"):
            if raw.get(extra):
                breaches.append(
                    Breach(
                        "provider: one deposit per exchange",
                        f"exchange:{item.id}",
                        f"{extra}: {json.dumps(raw[extra], default=str)[:300]}",
                    )
                )
    return breaches


UNFUNDED_STATUSES = frozenset({"new", "waiting", "expired"})
PARTNER_PAGE = 100
PARTNER_MAX_PAGES = 50


def _partner_exchanges(cn: Any, since: Any) -> list[Any]:
    rows: list[Any] = []
    for page in range(PARTNER_MAX_PAGES):
        batch = cn.list_exchanges(date_from=since, limit=PARTNER_PAGE, offset=page * PARTNER_PAGE)
        rows.extend(batch.exchanges)
        if len(batch.exchanges) < PARTNER_PAGE:
            break
    return rows


def reconcile_run(*, providers: bool = True, alert: bool = False) -> dict[str, Any]:
    breaches = reconcile_breaches()
    if providers:
        breaches += provider_breaches()
    if alert:
        for breach in breaches:
            alert_raise(
                key=f"reconcile:{breach.invariant}:{breach.object}"[:200],
                kind="reconcile_breach",
                message=f"[{breach.invariant}] {breach.object}: {breach.detail}",
            )
        alerts_resolve_cleared(
            prefix="reconcile:",
            still_open={f"reconcile:{b.invariant}:{b.object}"[:200] for b in breaches},
            actor="system:reconcile",
        )
    return {"ok": not breaches, "breaches": [b.as_json() for b in breaches]}


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

    def as_json(self) -> dict[str, Any]:
        return {"alerts": self.raised, "resolved": self.resolved}


def _order_link(kind: str, order_id: object) -> str:
    model = "conversionbatch" if kind == "batch" else "payout"
    app = "batches" if kind == "batch" else "payouts"
    return f"/admin/{app}/{model}/{order_id}/change/"


def watchdog_run(
    *, wallet_balances: Callable[[], tuple[Decimal, Decimal]] | None = None
) -> dict[str, Any]:
    from batches.models import ConversionBatch
    from payouts.models import Payout
    from payouts.services import runtime_settings_get

    runtime = runtime_settings_get()
    now = timezone.now()
    report = WatchdogReport()
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
