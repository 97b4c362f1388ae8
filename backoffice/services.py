"""Services of the project layer: system-wide status, roles, schedules, demo data."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import Count

from backoffice.models import WebhookEvent
from batches.models import ConversionBatch
from integrations.assets import format_amount
from payouts.models import ACCUMULATION_STATES, FundedOrder, Payout

ROLE_GROUPS = ("finance_viewer", "finance_operator", "finance_approver")


def system_status() -> dict[str, Any]:
    """Counts and sums per state, every state present (zeros included). Three grouped
    queries plus one sum, whatever the table sizes."""
    accumulations: dict[str, dict[str, Any]] = {
        state: {"count": 0, "eth": "0", "usd": "0", "usdt": "0"} for state in ACCUMULATION_STATES
    }
    with connection.cursor() as cur:
        cur.execute(
            "SELECT state, count(*), coalesce(sum(eth), 0), coalesce(sum(usd), 0), "
            "coalesce(sum(usdt), 0) FROM payouts_accumulation GROUP BY state"
        )
        for state, count, eth, usd, usdt in cur.fetchall():
            accumulations[state] = {
                "count": count,
                "eth": format_amount(eth),
                "usd": format_amount(usd),
                "usdt": format_amount(usdt),
            }
        cur.execute(
            "SELECT coalesce(sum(platform_usdt), 0) FROM batches_conversionbatch "
            "WHERE state = 'completed'"
        )
        platform_usdt = cur.fetchone()[0]
    return {
        "accumulations": accumulations,
        "batches": _order_counts(ConversionBatch),
        "payouts": _order_counts(Payout),
        "platform_usdt": format_amount(platform_usdt),
    }


def _order_counts(model: type[FundedOrder]) -> dict[str, int]:
    counts = {state.value: 0 for state in FundedOrder.State}
    rows = model.objects.order_by().values_list("state").annotate(n=Count("pk"))
    counts.update(dict(rows))
    return counts


def roles_setup() -> list[str]:
    """Create the finance role groups (idempotent). Their permissions grow with the admin."""
    from django.contrib.auth.models import Group, Permission

    view_codenames = [
        "view_client",
        "view_accumulation",
        "view_payout",
        "view_auditevent",
        "view_runtimesettings",
        "view_conversionbatch",
        "view_webhookevent",
        "view_exchangeattempt",
        "view_transfer",
        "view_jobrun",
        "view_alert",
    ]
    operator = [
        *view_codenames,
        "sync_orders",
        "retry_orders",
        "resolve_webhooks",
        "export_data",
        "change_alert",
    ]
    grants = {
        "finance_viewer": view_codenames,
        "finance_operator": operator,
        "finance_approver": [
            *operator,
            "force_close_orders",
            "force_complete_orders",
            "pause_jobs",
            "change_runtimesettings",
            "change_client",
        ],
    }
    with transaction.atomic():
        for name, codenames in grants.items():
            group, _ = Group.objects.get_or_create(name=name)
            group.permissions.set(Permission.objects.filter(codename__in=codenames))
    return list(grants)


# An EIP-55 address used as the payout destination of generated (seed) clients.
SEED_PAYOUT_ADDRESS = "0x52908400098527886E0F7030069857D2E4169EE7"

_SEED_CLIENTS_SQL = """
INSERT INTO payouts_client (
    reference, name, payout_strategy, payout_threshold_usd, payout_currency, payout_network,
    payout_address, payout_extra_id, fee_percent, active, created_at, updated_at
)
SELECT 'seed-' || lpad(g::text, 6, '0'), 'Seed merchant ' || g,
       CASE WHEN g %% 4 = 0 THEN 'instant' ELSE 'threshold' END,
       CASE WHEN g %% 4 = 0 THEN 0 ELSE 50 END,
       'usdt', 'eth', %(address)s, '', NULL, true, now(), now()
FROM generate_series(1, %(clients)s) AS g
ON CONFLICT (reference) DO NOTHING
"""

_SEED_ACCUMULATIONS_SQL = """
WITH c AS (
    SELECT id, row_number() OVER (ORDER BY reference) - 1 AS rn FROM payouts_client
    WHERE reference >= 'seed-000001' AND reference <= 'seed-' || lpad(%(clients)s::text, 6, '0')
), r AS (
    SELECT g, round((0.0001 + random() * 0.01)::numeric, 15) AS eth
    FROM generate_series(1, %(accumulations)s) AS g
)
INSERT INTO payouts_accumulation (
    client_id, payment_id, order_id, eth, usd, fee_percent, usdt, state, batch_id, payout_id,
    created_at, state_changed_at
)
SELECT c.id, %(run)s || '-' || r.g, '', r.eth, round(r.eth * 3000, 2) + 0.01, %(fee)s, NULL,
       'pending', NULL, NULL, now() - random() * interval '2 hours', now()
FROM r JOIN c ON c.rn = r.g %% %(clients)s
"""


def demo_seed(*, clients: int, accumulations: int) -> dict[str, Any]:
    """N seed clients (idempotent by reference) and M fresh pending accumulations, in two
    statements whatever N and M are."""
    import uuid

    from payouts.services import runtime_settings_get

    fee = runtime_settings_get().platform_fee_percent
    run = f"seed-{uuid.uuid4().hex[:12]}"
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(_SEED_CLIENTS_SQL, {"clients": clients, "address": SEED_PAYOUT_ADDRESS})
        cur.execute(
            _SEED_ACCUMULATIONS_SQL,
            {"clients": clients, "accumulations": accumulations, "run": run, "fee": fee},
        )
        created = cur.rowcount
    return {"clients": clients, "accumulations": created, "run": run}


DEMO_CLIENTS: tuple[dict[str, str], ...] = (
    {
        "reference": "demo-instant-usdt",
        "name": "Demo Coffee (instant, USDT on Ethereum)",
        "payout_strategy": "instant",
        "payout_threshold_usd": "0",
        "payout_currency": "usdt",
        "payout_network": "eth",
        "payout_address": "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
    },
    {
        "reference": "demo-threshold-btc",
        "name": "Demo Books (threshold $50, BTC)",
        "payout_strategy": "threshold",
        "payout_threshold_usd": "50",
        "payout_currency": "btc",
        "payout_network": "btc",
        "payout_address": "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq",
    },
    {
        "reference": "demo-threshold-xmr",
        "name": "Demo Games (threshold $25, XMR)",
        "payout_strategy": "threshold",
        "payout_threshold_usd": "25",
        "payout_currency": "xmr",
        "payout_network": "xmr",
        "payout_address": (
            "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wf"
            "n3RVGQBEP3A"
        ),
    },
)


def demo_setup(*, admin_username: str, admin_password: str) -> dict[str, Any]:
    """Demo merchants (validated like any import) and a superuser for the admin, idempotent."""
    from django.contrib.auth import get_user_model

    from payouts.services import client_upsert, client_validate
    from payouts.transitions import Actor

    actor = Actor.system("manage.py demo")
    outcomes = {}
    for data in DEMO_CLIENTS:
        client, outcome = client_upsert(data=client_validate(data=data), actor=actor)
        outcomes[client.reference] = outcome
    user_model = get_user_model()
    user, _ = user_model.objects.get_or_create(
        username=admin_username, defaults={"is_staff": True, "is_superuser": True}
    )
    user.is_staff = user.is_superuser = True
    user.set_password(admin_password)
    user.save()
    return {"clients": outcomes, "admin": admin_username}


# --- webhooks -------------------------------------------------------------------------------


@dataclass(frozen=True)
class WebhookOutcome:
    outcome: str
    reason: str = ""
    malformed: bool = False


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _body_text(body: bytes) -> str:
    return body.decode("utf-8", errors="backslashreplace")


def webhook_reject(
    *, provider: str, body: bytes, reason: str, request_id: str, signature_valid: bool
) -> None:
    """Keep a rejected delivery (bad signature, malformed) for the record; replays of the
    same bytes are stored once."""
    WebhookEvent.objects.get_or_create(
        provider=provider,
        event_id=f"rejected:{_digest(body)}",
        defaults={
            "signature_valid": signature_valid,
            "outcome": WebhookEvent.Outcome.REJECTED,
            "reason": reason[:2000],
            "body": _body_text(body),
            "request_id": request_id,
        },
    )


def _store_event(
    *, provider: str, event_id: str, body: bytes, request_id: str, **fields: Any
) -> tuple[WebhookEvent, bool]:
    try:
        with transaction.atomic():
            event = WebhookEvent.objects.create(
                provider=provider,
                event_id=event_id[:200],
                signature_valid=True,
                body=_body_text(body),
                request_id=request_id,
                **fields,
            )
            return event, True
    except IntegrityError:
        return WebhookEvent.objects.get(provider=provider, event_id=event_id[:200]), False


def ipn_apply(*, payload: dict[str, Any], body: bytes, request_id: str) -> WebhookOutcome:
    """Store a verified IPN and credit it when it is a finished ETH payment in USD for a known
    client; anything else is kept (ignored / unmatched) with the reason."""
    from payouts.services import IntakeError, accumulation_record
    from payouts.transitions import Actor

    payment_id = str(payload.get("payment_id") or "").strip()
    status = str(payload.get("payment_status") or "").strip().lower()
    if not payment_id or not status or len(payment_id) > 64:
        webhook_reject(
            provider="nowpayments",
            body=body,
            reason="payment_id or payment_status missing",
            request_id=request_id,
            signature_valid=True,
        )
        return WebhookOutcome("malformed", "payment_id and payment_status are required", True)
    order_id = str(payload.get("order_id") or "")
    event, created = _store_event(
        provider="nowpayments",
        event_id=f"{payment_id}:{status}:{_digest(body)[:16]}",
        body=body,
        request_id=request_id,
        outcome=WebhookEvent.Outcome.IGNORED,
        payment_id=payment_id,
        reference=order_id[:200],
    )
    if not created:
        return WebhookOutcome(WebhookEvent.Outcome.DUPLICATE, "replayed delivery")
    if status != "finished":
        _set_outcome(event, WebhookEvent.Outcome.IGNORED, f"payment_status {status}")
        return WebhookOutcome(WebhookEvent.Outcome.IGNORED)
    problem = _ipn_problem(payload)
    if problem:
        _set_outcome(event, WebhookEvent.Outcome.UNMATCHED, problem)
        return WebhookOutcome(WebhookEvent.Outcome.UNMATCHED, problem)
    try:
        result = accumulation_record(
            client_reference=order_id.split(":", 1)[0].strip(),
            payment_id=payment_id,
            eth=payload.get("outcome_amount"),
            usd=payload.get("price_amount"),
            order_id=order_id,
            actor=Actor.system("webhook:nowpayments"),
        )
    except IntakeError as exc:
        _set_outcome(event, WebhookEvent.Outcome.UNMATCHED, f"{exc.code}: {exc.message}")
        return WebhookOutcome(WebhookEvent.Outcome.UNMATCHED, exc.message)
    outcome = WebhookEvent.Outcome.APPLIED if result.created else WebhookEvent.Outcome.DUPLICATE
    _set_outcome(event, outcome, "", accumulation=result.accumulation)
    return WebhookOutcome(outcome)


def _ipn_problem(payload: dict[str, Any]) -> str:
    if str(payload.get("outcome_currency") or "").lower() != "eth":
        return f"outcome_currency {payload.get('outcome_currency')!r} is not eth"
    if str(payload.get("price_currency") or "").lower() != "usd":
        return f"price_currency {payload.get('price_currency')!r} is not usd"
    if not str(payload.get("order_id") or "").split(":", 1)[0].strip():
        return "order_id carries no client reference"
    return ""


def _set_outcome(event: WebhookEvent, outcome: str, reason: str, **fields: Any) -> None:
    WebhookEvent.objects.filter(pk=event.pk).update(outcome=outcome, reason=reason[:2000], **fields)


def nudge_apply(*, body: bytes, request_id: str) -> WebhookOutcome:
    """A verified ChangeNOW nudge: store it and enqueue an immediate step of the order that
    owns the exchange. The message is never trusted for amounts or states."""
    import json

    from payouts.engine import enqueue_advance, order_find_by_exchange

    try:
        data = json.loads(body)
    except ValueError:
        return WebhookOutcome("malformed", "body is not JSON", True)
    exchange_id = data.get("id") if isinstance(data, dict) else None
    if not isinstance(exchange_id, str) or not exchange_id.strip() or len(exchange_id) > 64:
        return WebhookOutcome("malformed", 'body must be {"id": "<exchange id>"}', True)
    found = order_find_by_exchange(exchange_id)
    outcome = WebhookEvent.Outcome.NUDGED if found else WebhookEvent.Outcome.UNKNOWN_EXCHANGE
    _store_event(
        provider="changenow",
        event_id=f"{exchange_id}:{_digest(body)[:16]}:{request_id}",
        body=body,
        request_id=request_id,
        outcome=outcome,
        reference=exchange_id,
        reason="" if found else "no order owns this exchange",
    )
    if found:
        with transaction.atomic():
            enqueue_advance(kind=found[0], order_id=found[1])
    return WebhookOutcome(outcome)


class ResolveError(Exception):
    """An unmatched event that cannot be credited as asked; the message says why."""


def webhook_event_resolve(
    *, event_id: int, client_reference: str, actor: Any, reason: str
) -> WebhookEvent:
    """Credit an unmatched NOWPayments event to a client chosen by finance, exactly once.

    Only the facts in the stored, verified body are used; the payment must still be a
    finished ETH payment priced in USD."""
    import json
    from decimal import Decimal

    from payouts.services import IntakeError, accumulation_record

    if not reason.strip():
        raise ResolveError("a reason is required")
    with transaction.atomic():
        event = WebhookEvent.objects.select_for_update().get(pk=event_id)
        if event.provider != WebhookEvent.Provider.NOWPAYMENTS or not event.signature_valid:
            raise ResolveError("only verified NOWPayments events can be resolved")
        if event.outcome != WebhookEvent.Outcome.UNMATCHED:
            raise ResolveError(f"event is {event.outcome}, not unmatched")
        payload = json.loads(event.body, parse_float=Decimal)
        if str(payload.get("payment_status", "")).lower() != "finished":
            raise ResolveError("the payment is not finished")
        problem = _ipn_problem({**payload, "order_id": f"{client_reference}:"})
        if problem:
            raise ResolveError(problem)
        try:
            result = accumulation_record(
                client_reference=client_reference,
                payment_id=str(payload.get("payment_id")),
                eth=payload.get("outcome_amount"),
                usd=payload.get("price_amount"),
                order_id=str(payload.get("order_id") or ""),
                actor=actor,
            )
        except IntakeError as exc:
            raise ResolveError(exc.message) from exc
        from django.utils import timezone

        from payouts.transitions import audit_record

        WebhookEvent.objects.filter(pk=event.pk).update(
            outcome=WebhookEvent.Outcome.RESOLVED,
            accumulation=result.accumulation,
            resolved_at=timezone.now(),
            resolved_by=actor.user if getattr(actor, "user", None) is not None else None,
            reason=f"{event.reason} | resolved to {client_reference}: {reason}"[:2000],
        )
        audit_record(
            object_type="webhookevent",
            object_id=event.pk,
            kind="resolved",
            actor=actor,
            reason=reason,
            data={
                "client": client_reference,
                "accumulation": result.accumulation.pk,
                "credited": result.created,
            },
        )
        event.refresh_from_db()
        return event


def settings_change(*, changes: dict[str, Any], actor: Any, reason: str) -> Any:
    """Change run-time settings (audited) and re-apply the schedules when an interval moved,
    so the change takes effect at the next run without a restart."""
    from backoffice.schedules import schedules_setup
    from payouts.services import runtime_settings_update

    row = runtime_settings_update(changes=changes, actor=actor, reason=reason)
    if any(name.endswith("_interval_seconds") for name in changes):
        schedules_setup()
    return row
