"""Services of the project layer: system-wide status, roles, schedules, demo data."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from backoffice.models import WebhookEvent
from batches.models import ConversionBatch
from integrations.assets import format_amount
from integrations.errors import MalformedPayload
from payouts.models import Accumulation, FundedOrder, Payout
from payouts.totals import accumulation_totals

ROLE_GROUPS = ("finance_viewer", "finance_operator", "finance_approver")


def system_status() -> dict[str, Any]:
    """Counts and sums per state, every state present (zeros included): the accumulations'
    from their kept totals (checked by reconcile), orders grouped, plus one sum, whatever
    the table sizes."""
    accumulations = {
        state: {
            "count": t.count,
            "eth": format_amount(t.eth),
            "usd": format_amount(t.usd),
            "usdt": format_amount(t.usdt),
        }
        for state, t in accumulation_totals().items()
    }
    with connection.cursor() as cur:
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
        "view_account",
        "view_ledgertransaction",
        "view_currency",
    ]
    operator = [
        *view_codenames,
        "view_approvalrequest",
        "request_changes",
        "sync_orders",
        "retry_orders",
        "resolve_webhooks",
        "export_data",
        "change_alert",
        "refresh_currencies",
    ]
    grants = {
        "finance_viewer": view_codenames,
        "finance_operator": operator,
        "finance_approver": [
            *operator,
            "approve_changes",
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
#
# Every verified delivery is stored, whatever it says: unsigned ones as `rejected`, signed
# ones that cannot be used as `unmatched` with the reason, for finance. An IPN is stored and
# applied in one transaction; its application runs under a savepoint, so whatever goes wrong
# there is rolled back and the event is still stored.

log = logging.getLogger("backoffice.webhooks")

# A later report that a credited payment was refunded or only partly paid: the money we
# credited may not be there; a person decides (DESIGN 12.6).
REVERSAL_STATUSES = frozenset({"refunded", "partially_paid"})
REVERSAL_REASON = "reversed after credit"


@dataclass(frozen=True)
class WebhookOutcome:
    outcome: str
    reason: str = ""
    malformed: bool = False


@dataclass(frozen=True)
class _Decision:
    outcome: str
    reason: str = ""
    accumulation_id: int | None = None
    alert: bool = False


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _storable(text: str, limit: int) -> str:
    """`text` as PostgreSQL can keep it in a text column: lone surrogates and NUL escaped."""
    safe = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return safe.replace("\x00", "\\x00")[:limit]


def _shown(value: object) -> str:
    return ascii(value)[:60] if isinstance(value, str) else type(value).__name__


# ON CONFLICT instead of a savepoint and an IntegrityError: a replay costs one statement.
_EVENT_INSERT_SQL = """
INSERT INTO backoffice_webhookevent (
    provider, event_id, received_at, signature_valid, outcome, reason, body, headers,
    request_id, payment_id, reference, accumulation_id
) VALUES (%s, %s, %s, %s, %s, %s, %s, '{}', %s, %s, %s, %s)
ON CONFLICT (provider, event_id) DO NOTHING
RETURNING id
"""


def _event_store(
    *,
    provider: str,
    event_id: str,
    body: bytes,
    request_id: str,
    signature_valid: bool,
    outcome: str,
    reason: str = "",
    payment_id: str = "",
    reference: str = "",
    accumulation_id: int | None = None,
) -> int | None:
    """Insert one event; its id, or None when (provider, event_id) is already stored."""
    with connection.cursor() as cur:
        cur.execute(
            _EVENT_INSERT_SQL,
            [
                provider,
                _storable(event_id, 200),
                timezone.now(),
                signature_valid,
                outcome,
                _storable(reason, 2000),
                bytes(body),
                _storable(request_id, 64),
                _storable(payment_id, 64),
                _storable(reference, 200),
                accumulation_id,
            ],
        )
        row = cur.fetchone()
    return row[0] if row else None


# What is kept of a body nobody signed: enough to see what it was, not so much that an
# unauthenticated sender decides how fast the table grows.
REJECTED_BODY_KEEP_BYTES = 4096


def webhook_reject(*, provider: str, body: bytes, reason: str, request_id: str) -> None:
    """Keep a delivery whose signature failed, for the record (and the watchdog's count of
    signature failures); replays of the same bytes are stored once."""
    if len(body) > REJECTED_BODY_KEEP_BYTES:
        reason = f"{reason} (first {REJECTED_BODY_KEEP_BYTES} of {len(body)} bytes kept)"
    _event_store(
        provider=provider,
        event_id=f"rejected:{_digest(body)}",
        body=body[:REJECTED_BODY_KEEP_BYTES],
        request_id=request_id,
        signature_valid=False,
        outcome=WebhookEvent.Outcome.REJECTED,
        reason=reason,
    )


def webhook_unusable(*, provider: str, body: bytes, reason: str, request_id: str) -> None:
    """Keep a correctly signed body that cannot be used (not JSON, over a limit, no valid
    payment_id) as unmatched, for finance: the provider signed it, so it is never lost."""
    _event_store(
        provider=provider,
        event_id=f"unusable:{_digest(body)}",
        body=body,
        request_id=request_id,
        signature_valid=True,
        outcome=WebhookEvent.Outcome.UNMATCHED,
        reason=reason,
    )


def ipn_apply(*, payload: dict[str, Any], body: bytes, request_id: str) -> WebhookOutcome:
    """Store a verified IPN and credit it when it is a finished ETH payment in USD for a known
    client, in one transaction; anything else is kept (ignored / unmatched) with the reason.

    The application runs first, under a savepoint, and the event is inserted after it with
    what the application did: one statement for the event instead of an insert and an
    update. When the event turns out to be stored already (a replay), the savepoint is
    rolled back, so a replay never changes anything."""
    from integrations.nowpayments.ipn import ipn_payment_id, ipn_status

    try:
        payment_id = ipn_payment_id(payload.get("payment_id"))
        status = ipn_status(payload.get("payment_status"))
    except MalformedPayload as exc:
        webhook_unusable(provider="nowpayments", body=body, reason=str(exc), request_id=request_id)
        return WebhookOutcome("malformed", str(exc), True)
    order_id = payload.get("order_id")
    with transaction.atomic():
        savepoint = transaction.savepoint()
        try:
            decision = _ipn_decide(payload, payment_id, status)
        except Exception as exc:  # noqa: BLE001 - whatever failed, the signed event is kept
            transaction.savepoint_rollback(savepoint)
            # The savepoint restored a healthy transaction; an ORM write that failed inside
            # it has flagged the whole block for rollback, which would lose the event too.
            transaction.set_rollback(False)
            log.exception("ipn application failed", extra={"payment_id": payment_id})
            decision = _Decision(
                WebhookEvent.Outcome.UNMATCHED,
                f"could not be applied: {type(exc).__name__}: {exc}",
            )
        event_pk = _event_store(
            provider="nowpayments",
            event_id=f"{payment_id}:{status}:{_digest(body)[:16]}",
            body=body,
            request_id=request_id,
            signature_valid=True,
            outcome=decision.outcome,
            reason=decision.reason,
            payment_id=payment_id,
            reference=order_id if isinstance(order_id, str) else "",
            accumulation_id=decision.accumulation_id,
        )
        if event_pk is None:
            transaction.savepoint_rollback(savepoint)
            return WebhookOutcome(WebhookEvent.Outcome.DUPLICATE, "replayed delivery")
        if decision.alert:
            _alert_reversal(event_pk=event_pk, payment_id=payment_id, message=decision.reason)
    return WebhookOutcome(decision.outcome, decision.reason)


def _ipn_decide(payload: dict[str, Any], payment_id: str, status: str) -> _Decision:
    from payouts.services import IntakeError, accumulation_record
    from payouts.transitions import Actor

    if status in REVERSAL_STATUSES:
        if Accumulation.objects.filter(payment_id=payment_id).exists():
            return _Decision(
                WebhookEvent.Outcome.UNMATCHED,
                f"{REVERSAL_REASON}: payment {payment_id} was credited and NOWPayments now "
                f"reports it {status}",
                alert=True,
            )
        return _Decision(WebhookEvent.Outcome.IGNORED, f"payment_status {status}")
    if status != "finished":
        return _Decision(WebhookEvent.Outcome.IGNORED, f"payment_status {status}")
    problem = _ipn_problem(payload)
    if problem:
        return _Decision(WebhookEvent.Outcome.UNMATCHED, problem)
    order_id: str = payload["order_id"]
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
        return _Decision(WebhookEvent.Outcome.UNMATCHED, f"{exc.code}: {exc.message}")
    outcome = WebhookEvent.Outcome.APPLIED if result.created else WebhookEvent.Outcome.DUPLICATE
    return _Decision(outcome, accumulation_id=result.accumulation.pk)


def _ipn_problem(payload: dict[str, Any]) -> str:
    for field, expected in (("outcome_currency", "eth"), ("price_currency", "usd")):
        value = payload.get(field)
        if not isinstance(value, str) or value.lower() != expected:
            return f"{field} {_shown(value)} is not {expected}"
    order_id = payload.get("order_id")
    if not isinstance(order_id, str):
        return f"order_id is {_shown(order_id)}, not a string with a client reference"
    if _storable(order_id, len(order_id)) != order_id:
        return "order_id holds a NUL or a lone surrogate: no client reference can match it"
    if not order_id.split(":", 1)[0].strip():
        return "order_id carries no client reference"
    return ""


def _alert_reversal(*, event_pk: int, payment_id: str, message: str) -> None:
    from django.urls import reverse

    from backoffice.operations import alert_raise

    try:
        with transaction.atomic():
            alert_raise(
                key=f"intake:reversal:{payment_id}",
                kind="payment_reversed",
                message=message,
                link=reverse("admin:backoffice_webhookevent_change", args=[event_pk]),
            )
    except Exception:  # noqa: BLE001 - the event is stored and counted on the dashboard
        log.exception("reversal alert failed", extra={"payment_id": payment_id})


def nudge_apply(
    *, exchange_id: str, timestamp: int, body: bytes, request_id: str
) -> WebhookOutcome:
    """A verified ChangeNOW nudge: store it and enqueue an immediate step of the order that
    owns the exchange. Deduplicated on (exchange id, signed timestamp): a replay of the same
    signed header is a duplicate and polls nothing. The message is never trusted for amounts
    or states."""
    from payouts.engine import enqueue_advance, order_find_by_exchange

    found = order_find_by_exchange(exchange_id)
    outcome = WebhookEvent.Outcome.NUDGED if found else WebhookEvent.Outcome.UNKNOWN_EXCHANGE
    stored = _event_store(
        provider="changenow",
        event_id=f"{exchange_id}:{timestamp}",
        body=body,
        request_id=request_id,
        signature_valid=True,
        outcome=outcome,
        reference=exchange_id,
        reason="" if found else "no order owns this exchange",
    )
    if stored is None:
        return WebhookOutcome(WebhookEvent.Outcome.DUPLICATE, "replayed nudge")
    if found:
        # Outside a transaction the event is committed already, so the task runs at once.
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
    from integrations.nowpayments.ipn import ipn_payment_id, parse_ipn_body
    from payouts.services import IntakeError, accumulation_record

    if not reason.strip():
        raise ResolveError("a reason is required")
    with transaction.atomic():
        event = WebhookEvent.objects.select_for_update().get(pk=event_id)
        if event.provider != WebhookEvent.Provider.NOWPAYMENTS or not event.signature_valid:
            raise ResolveError("only verified NOWPayments events can be resolved")
        if event.outcome != WebhookEvent.Outcome.UNMATCHED:
            raise ResolveError(f"event is {event.outcome}, not unmatched")
        try:
            payload = parse_ipn_body(event.body)
            payment_id = ipn_payment_id(payload.get("payment_id"))
        except MalformedPayload as exc:
            raise ResolveError(f"the stored body is not a usable IPN: {exc}") from None
        if str(payload.get("payment_status", "")).lower() != "finished":
            raise ResolveError("the payment is not finished")
        problem = _ipn_problem({**payload, "order_id": f"{client_reference}:"})
        if problem:
            raise ResolveError(problem)
        order_id = payload.get("order_id")
        try:
            result = accumulation_record(
                client_reference=client_reference,
                payment_id=payment_id,
                eth=payload.get("outcome_amount"),
                usd=payload.get("price_amount"),
                order_id=_storable(order_id, 200) if isinstance(order_id, str) else "",
                actor=actor,
            )
        except IntakeError as exc:
            raise ResolveError(exc.message) from exc
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
