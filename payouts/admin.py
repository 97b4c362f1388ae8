"""Admin pages of the payouts app: clients, accumulations, payouts, audit events, exchange
attempts, transfers and the run-time settings; and the shared page of a funded order
(`FundedOrderAdmin`) that conversion batches reuse.

Design: pages only read; every change goes through a service (`payouts.operator`,
`payouts.services`) behind a confirmed action or a form with a required reason, so the
locks, transition table and audit trail of the money core apply to people exactly as they
apply to jobs. See `payouts.admin_support` for paging, filters and the action machinery.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import (
    BooleanField,
    Case,
    Count,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import escape, format_html
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe

from payouts import operator
from payouts.admin_support import (
    ActionSpec,
    ClientReferenceFilter,
    InputFilter,
    Option,
    ReadOnlyAdmin,
    StuckFilter,
    address_link,
    admin_url,
    age,
    change_link,
    confirmed_action,
    datetime_column,
    eth,
    fmt_decimal,
    percent,
    plain_initial,
    require_permission,
    short_id,
    state_badge,
    stuck_q,
    tx_link,
    usd,
    usdt,
)
from payouts.models import (
    ACCUMULATION_STATES,
    Accumulation,
    AuditEvent,
    Client,
    ExchangeAttempt,
    Payout,
    RuntimeSettings,
    Transfer,
)
from payouts.services import (
    SETTINGS_EDITABLE,
    client_upsert,
    client_validate,
    runtime_settings_get,
    runtime_settings_update,
)
from payouts.transitions import Actor

DATE_FILTER = admin.DateFieldListFilter
HEX = set("0123456789abcdefABCDEF")


def _runtime(request: HttpRequest) -> RuntimeSettings:
    """The settings row, read once per request (stuck limits are needed by every row)."""
    cached = getattr(request, "_bo_runtime", None)
    if cached is None:
        cached = runtime_settings_get()
        request._bo_runtime = cached  # type: ignore[attr-defined]
    return cached


def _as_uuid(term: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(term)
    except ValueError:
        return None


def orders_matching(term: str, *, by_payment: bool = True) -> tuple[set[Any], set[Any]]:
    """(batch ids, payout ids) an operator may mean by `term`: an order id, an exchange id
    (any attempt, not only the current one), a transaction hash or a NOWPayments payment id.
    Each lookup is an exact match on an indexed column."""
    batch_ids: set[Any] = set()
    payout_ids: set[Any] = set()
    as_uuid = _as_uuid(term)
    if as_uuid is not None:
        batch_ids.add(as_uuid)
        payout_ids.add(as_uuid)
    linked = [
        ExchangeAttempt.objects.filter(exchange_id=term),
        Transfer.objects.filter(tx_hash__in={term, term.lower()}),
    ]
    for queryset in linked:
        for batch_id, payout_id in queryset.values_list("batch_id", "payout_id")[:100]:
            (batch_ids if batch_id else payout_ids).add(batch_id or payout_id)
    if by_payment:
        payments = Accumulation.objects.filter(payment_id=term)
        for batch_id, payout_id in payments.values_list("batch_id", "payout_id"):
            if batch_id:
                batch_ids.add(batch_id)
            if payout_id:
                payout_ids.add(payout_id)
    return batch_ids, payout_ids


def _history_entry(entry: Any) -> dict[str, str]:
    """One ChangeNOW status seen, with its time in the page's format."""
    if not isinstance(entry, dict):
        return {"status": str(entry), "at": ""}
    at = str(entry.get("at") or "")
    with contextlib.suppress(ValueError):
        at = datetime.fromisoformat(at).strftime("%Y-%m-%d %H:%M:%S")
    return {"status": str(entry.get("status") or "?"), "at": at}


def _tidy(value: Any) -> Any:
    """Audit data as people read it: '0.0484', not '0.048400000000000000'."""
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except ArithmeticError:
            return value
        return fmt_decimal(number) if number.is_finite() and "." in value else value
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_tidy(v)}" for k, v in value.items())
    return value


def audit_details(events: list[AuditEvent]) -> list[AuditEvent]:
    for event in events:
        data = event.data if isinstance(event.data, dict) else {"data": event.data}
        event.details = [(key, _tidy(value)) for key, value in data.items()]
    return events


def audit_timeline(object_type: str, object_id: object, limit: int = 200) -> list[AuditEvent]:
    events = AuditEvent.objects.filter(object_type=object_type, object_id=str(object_id))
    return audit_details(list(events.order_by("id")[:limit]))


def audit_url(object_type: str, object_id: object) -> str:
    return f"{admin_url(AuditEvent)}?object_type={object_type}&object_id={object_id}"


# --- funded orders (payouts here, conversion batches in batches.admin) -------------------

ORDER_ACTIONS: Mapping[str, ActionSpec] = {
    "sync_now": ActionSpec(
        name="sync_now",
        verb="Sync now",
        permission="payouts.sync_orders",
        needs_reason=False,
        summary=(
            "Polls ChangeNOW (and the chain) for each order now, ignoring any backoff, and "
            "records what it says. An open order takes its next step at once."
        ),
    ),
    "retry_step": ActionSpec(
        name="retry_step",
        verb="Retry the step",
        permission="payouts.retry_orders",
        needs_reason=True,
        summary=(
            "Puts a stopped order back on its way, with a new recorded attempt. A transaction "
            "that was already signed or broadcast is followed or re-broadcast with the same "
            "bytes: never a second send."
        ),
    ),
    "force_close": ActionSpec(
        name="force_close",
        verb="Force-close",
        permission="payouts.force_close_orders",
        needs_reason=True,
        danger=True,
        summary=(
            "Closes each order for good. Its rows are released to their previous state only "
            "when the chain proves no funds left, or with a refund proved on chain and by "
            "ChangeNOW; or, if you tick the box, written off."
        ),
        options=(
            Option(
                "write_off",
                "Write the rows off instead of releasing them",
                "The clients' claim on the rows is cancelled; they will never be paid.",
            ),
        ),
    ),
    "force_complete": ActionSpec(
        name="force_complete",
        verb="Force-complete",
        permission="payouts.force_complete_orders",
        needs_reason=True,
        danger=True,
        summary=(
            "Completes each order from the provider's own word, read live now: only a "
            "ChangeNOW exchange that says `finished` with an amount (or, for a direct USDT "
            "payout, a transfer mined, final and with its Transfer log) is completed."
        ),
    ),
    "speed_up": ActionSpec(
        name="speed_up",
        verb="Speed up the transfer",
        permission="payouts.force_close_orders",
        needs_reason=True,
        summary=(
            "Re-signs the pending transaction at the same nonce with both fee caps raised at "
            "least 12.5% (never above the fee ceiling). Only one of the two can ever mine."
        ),
    ),
    "cancel_transfer": ActionSpec(
        name="cancel_transfer",
        verb="Cancel the transfer",
        permission="payouts.force_close_orders",
        needs_reason=True,
        danger=True,
        summary=(
            "Signs a zero-value transfer from the host wallet to itself at the pending "
            "transaction's nonce, with higher fees. Once it mines the payment can never mine."
        ),
    ),
    "request_refund": ActionSpec(
        name="request_refund",
        verb="Ask ChangeNOW for a refund",
        permission="payouts.force_close_orders",
        needs_reason=True,
        summary="Asks ChangeNOW to refund the exchange's deposit to the host wallet.",
    ),
    "request_continue": ActionSpec(
        name="request_continue",
        verb="Ask ChangeNOW to continue",
        permission="payouts.force_close_orders",
        needs_reason=True,
        summary="Asks ChangeNOW to continue an exchange it stopped after our deposit.",
    ),
}
# The operator module's name of each admin action.
OPERATOR_ACTION = {
    "sync_now": "sync",
    "retry_step": "retry",
    "force_close": "force_close",
    "force_complete": "force_complete",
    "speed_up": "speed_up",
    "cancel_transfer": "cancel",
    "request_refund": "refund",
    "request_continue": "continue",
}
REFUND_INPUT = {
    "name": "refund_tx",
    "label": "Refund transaction (to release the rows after a deposit)",
    "help": "The hash of ChangeNOW's refund to the host wallet. It is checked on chain and "
    "with ChangeNOW; leave empty when no funds left.",
    "optional": True,
}


class FundedOrderAdmin(ReadOnlyAdmin):
    """Shared page and actions of a funded exchange order (a batch or a payout)."""

    kind: ClassVar[str] = ""
    object_type: ClassVar[str] = ""
    link_field: ClassVar[str] = ""  # the FK name on accumulations, attempts and transfers
    change_form_template = "admin/backoffice/order_change_form.html"
    list_filter: ClassVar[Sequence[Any]] = ("state", StuckFilter, ("created_at", DATE_FILTER))
    actions: ClassVar[Sequence[str]] = [*ORDER_ACTIONS, "export_csv"]
    action_permissions: ClassVar[Mapping[str, str]] = {
        "export_csv": "payouts.export_data",
        **{name: spec.permission for name, spec in ORDER_ACTIONS.items()},
    }
    search_help_text = "Exact order id, exchange id, transaction hash or payment id."
    search_fields: ClassVar[Sequence[str]] = ("exchange_id",)  # shows the box; see below

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        batch_ids, payout_ids = orders_matching(term)
        ids = batch_ids if self.kind == "batch" else payout_ids
        query = Q(pk__in=ids) | Q(exchange_id=term)
        if self.kind == "payout":
            query |= Q(client__reference=term)
        return queryset.filter(query), False

    # columns -----------------------------------------------------------------------------

    @admin.display(description="id", ordering="created_at")
    def short(self, obj: Any) -> str:
        return short_id(obj.pk)

    @admin.display(description="state", ordering="state")
    def state_display(self, obj: Any) -> Any:
        return state_badge(obj.state, stuck=getattr(obj, "is_stuck", False))

    @admin.display(description="in state for")
    def state_age(self, obj: Any) -> str:
        return age(obj.state_changed_at)

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The stuck flag of each listed order, computed by the database from the limits
        # read once for the request.
        flag = Case(
            When(stuck_q(_runtime(request)), then=Value(True)),
            default=Value(False),
            output_field=BooleanField(),
        )
        return super().get_queryset(request).annotate(is_stuck=flag)

    # page --------------------------------------------------------------------------------

    def rows_by_state(self, obj: Any) -> list[dict[str, Any]]:
        rows = (
            Accumulation.objects.filter(**{self.link_field: obj.pk})
            .order_by()
            .values("state")
            .annotate(n=Count("id"), eth=Sum("eth"), usd=Sum("usd"), usdt=Sum("usdt"))
        )
        return [
            {
                "state": r["state"],
                "n": r["n"],
                "eth": eth(r["eth"]),
                "usd": usd(r["usd"]),
                "usdt": usdt(r["usdt"]) if r["usdt"] is not None else "—",
                "url": f"{admin_url(Accumulation)}?{self.link_field}__id__exact={obj.pk}"
                f"&state__exact={r['state']}",
            }
            for r in rows
        ]

    def attempts(self, obj: Any) -> list[ExchangeAttempt]:
        attempts = list(ExchangeAttempt.objects.filter(**{self.link_field: obj.pk}).order_by("id"))
        for attempt in attempts:
            attempt.history = [_history_entry(h) for h in attempt.status_history or []]
        return attempts

    def transfers(self, obj: Any) -> list[Transfer]:
        # Kept on the object: the page's action buttons depend on them too (one query).
        if getattr(obj, "_bo_transfers", None) is None:
            obj._bo_transfers = list(
                Transfer.objects.filter(**{self.link_field: obj.pk})
                .prefetch_related("txs")
                .order_by("id")
            )
        return obj._bo_transfers

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        # The page leads with a formatted summary; the stored values stay one click away.
        fields = [f.name for f in self.model._meta.concrete_fields]
        return [("All stored fields", {"classes": ["collapse"], "fields": fields})]

    def summary(self, obj: Any) -> list[tuple[str, Any]]:
        """The order's facts for its page, formatted for people (kind-specific part)."""
        raise NotImplementedError

    def page_context(self, request: HttpRequest, obj: Any) -> dict[str, Any]:
        stuck = bool(getattr(obj, "is_stuck", False))
        facts: list[tuple[str, Any]] = [
            (
                "state",
                format_html(
                    "{} for {}", state_badge(obj.state, stuck=stuck), age(obj.state_changed_at)
                ),
            ),
            *self.summary(obj),
            (
                "exchange id",
                format_html('<span class="bo-mono">{}</span>', obj.exchange_id)
                if obj.exchange_id
                else "none created yet",
            ),
            ("ChangeNOW status", obj.provider_status or "—"),
            ("pays into", address_link(obj.payin_address) if obj.payin_address else "—"),
            ("created", obj.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ]
        if obj.completed_at:
            facts.append(("completed", obj.completed_at.strftime("%Y-%m-%d %H:%M:%S UTC")))
        if obj.provider_refund_hash or obj.provider_refund_amount is not None:
            facts.append(
                (
                    "ChangeNOW refund",
                    format_html(
                        "{} in {}",
                        fmt_decimal(obj.provider_refund_amount)
                        if obj.provider_refund_amount is not None
                        else "amount not reported",
                        tx_link(obj.provider_refund_hash) if obj.provider_refund_hash else "—",
                    ),
                )
            )
        if obj.refund_tx_hash:
            facts.append(
                (
                    "refund proved",
                    format_html(
                        "{} {} received in {}; loss {}",
                        fmt_decimal(obj.refund_received),
                        obj.loss_asset.upper(),
                        tx_link(obj.refund_tx_hash),
                        fmt_decimal(obj.loss_amount),
                    ),
                )
            )
        return {
            "order": obj,
            "order_kind": self.kind,
            "order_state": state_badge(obj.state, stuck=stuck),
            "order_stuck": stuck,
            "money": facts,
            "rows_by_state": self.rows_by_state(obj),
            "rows_url": f"{admin_url(Accumulation)}?{self.link_field}__id__exact={obj.pk}",
            "attempts": self.attempts(obj),
            "transfers": self.transfers(obj),
            "timeline": audit_timeline(self.object_type, obj.pk),
            "timeline_url": audit_url(self.object_type, obj.pk),
        }

    def object_actions(self, request: HttpRequest, obj: Any) -> list[dict[str, str]]:
        pending = any(t.state in Transfer.PENDING for t in self.transfers(obj))
        shown = set(ORDER_ACTIONS) if not obj.is_terminal else {"cancel_transfer"}
        if not pending:
            shown -= {"speed_up", "cancel_transfer"}
        if obj.state != "needs_attention" or not obj.exchange_id:
            shown -= {"request_refund", "request_continue"}
        return [
            {"name": name, "verb": spec.verb, "danger": spec.danger}
            for name, spec in ORDER_ACTIONS.items()
            if name in shown and request.user.has_perm(spec.permission)
        ]

    # actions -----------------------------------------------------------------------------

    def describe_money(self, obj: Any) -> list[tuple[str, Any]]:
        raise NotImplementedError

    def describe(self, obj: Any, action: str, refund_tx: str = "") -> dict[str, Any]:
        live = Transfer.objects.filter(**{self.link_field: obj.pk}, state__in=Transfer.LIVE).first()
        facts: list[tuple[str, Any]] = [
            ("state", format_html("{} for {}", state_badge(obj.state), age(obj.state_changed_at))),
            ("rows", obj.row_count),
            *self.describe_money(obj),
            ("exchange", obj.exchange_id or "none created"),
            ("provider says", obj.provider_status or "—"),
            (
                "live transaction",
                format_html("{} ({})", tx_link(live.tx_hash), live.state)
                if live and live.tx_hash
                else (live.state if live else "none"),
            ),
        ]
        if obj.last_error:
            facts.append(("last error", obj.last_error))
        effect, warning = self.effect(obj, action, live, refund_tx=refund_tx)
        return {
            "label": f"{self.kind} {short_id(obj.pk)}",
            "url": admin_url(obj, "change", obj.pk),
            "facts": facts,
            "effect": effect,
            "warning": warning,
        }

    def effect(
        self, obj: Any, action: str, live: Transfer | None, *, refund_tx: str = ""
    ) -> tuple[str, str]:
        """What the action will do to this order and, when it will be refused, why: the
        operator module's own words (the rules live there, not here)."""
        plan = operator.order_plan(
            kind=self.kind,
            order_id=obj.pk,
            action=OPERATOR_ACTION[action],
            refund_tx=refund_tx,
            check_chain=True,
        )
        if plan.allowed:
            return plan.effect, ""
        return plan.effect, f"Will be refused: {plan.refusal}."

    def run_order_action(
        self, request: HttpRequest, queryset: QuerySet, name: str
    ) -> HttpResponse | None:
        spec = ORDER_ACTIONS[name]
        actor = Actor.of_user(request.user)
        kind = self.kind
        refund_tx = (request.POST.get("refund_tx") or "").strip()

        def execute(obj: Any, reason: str, options: Mapping[str, bool]) -> tuple[bool, str]:
            if name == "sync_now":
                result = operator.order_sync(kind=kind, order_id=obj.pk, actor=actor)
            elif name == "retry_step":
                result = operator.order_retry(
                    kind=kind, order_id=obj.pk, actor=actor, reason=reason
                )
            elif name == "force_close":
                result = operator.order_force_close(
                    kind=kind,
                    order_id=obj.pk,
                    actor=actor,
                    reason=reason,
                    write_off=options.get("write_off", False),
                    refund_tx=refund_tx,
                )
            elif name in ("speed_up", "cancel_transfer"):
                result = operator.order_replace_transfer(
                    kind=kind,
                    order_id=obj.pk,
                    actor=actor,
                    reason=reason,
                    cancel=name == "cancel_transfer",
                )
            elif name in ("request_refund", "request_continue"):
                result = operator.order_provider_action(
                    kind=kind,
                    order_id=obj.pk,
                    actor=actor,
                    reason=reason,
                    which=OPERATOR_ACTION[name],
                )
            else:
                result = operator.order_force_complete(
                    kind=kind, order_id=obj.pk, actor=actor, reason=reason
                )
            return result.done, result.detail

        inputs = [dict(REFUND_INPUT, value=refund_tx)] if name == "force_close" else []
        return confirmed_action(
            self,
            request,
            queryset,
            spec=spec,
            describe=lambda obj: self.describe(obj, name, refund_tx=refund_tx),
            execute=execute,
            refusals=(operator.OperatorError,),
            inputs=inputs,
        )

    @admin.action(description="Sync now (poll the provider)")
    def sync_now(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self.run_order_action(request, queryset, "sync_now")

    @admin.action(description="Retry the stopped step…")
    def retry_step(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self.run_order_action(request, queryset, "retry_step")

    @admin.action(description="Force-close…")
    def force_close(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self.run_order_action(request, queryset, "force_close")

    @admin.action(description="Force-complete from the provider…")
    def force_complete(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self.run_order_action(request, queryset, "force_complete")

    @admin.action(description="Speed up the pending transfer…")
    def speed_up(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self.run_order_action(request, queryset, "speed_up")

    @admin.action(description="Cancel the pending transfer…")
    def cancel_transfer(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self.run_order_action(request, queryset, "cancel_transfer")

    @admin.action(description="Ask ChangeNOW for a refund…")
    def request_refund(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self.run_order_action(request, queryset, "request_refund")

    @admin.action(description="Ask ChangeNOW to continue…")
    def request_continue(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self.run_order_action(request, queryset, "request_continue")


@admin.register(Payout)
class PayoutAdmin(FundedOrderAdmin):
    kind = "payout"
    object_type = "payout"
    link_field = "payout"
    list_display = (
        "short",
        "client_link",
        "state_display",
        "state_age",
        "row_count",
        "amount",
        "destination",
        "exchange_id",
        "created",
    )
    list_display_links = ("short",)
    list_select_related = ("client",)
    created = datetime_column("created_at", "created")
    list_filter = (
        "state",
        StuckFilter,
        ClientReferenceFilter,
        "currency",
        ("created_at", DATE_FILTER),
    )
    export_columns = (
        ("payout_id", "id"),
        ("client_reference", "client__reference"),
        ("state", "state"),
        ("rows", "row_count"),
        ("usdt_amount", "usdt_amount"),
        ("currency", "currency"),
        ("network", "network"),
        ("address", "address"),
        ("extra_id", "extra_id"),
        ("amount_to", "amount_to"),
        ("exchange_id", "exchange_id"),
        ("created_at", "created_at"),
        ("completed_at", "completed_at"),
    )

    @admin.display(description="client", ordering="client__reference")
    def client_link(self, obj: Payout) -> Any:
        return change_link(Client, obj.client_id, obj.client.reference)

    @admin.display(description="USDT", ordering="usdt_amount")
    def amount(self, obj: Payout) -> str:
        return fmt_decimal(obj.usdt_amount, 6)

    @admin.display(description="to")
    def destination(self, obj: Payout) -> str:
        return f"{obj.currency.upper()}/{obj.network} {obj.address[:10]}…"

    page_select_related = ("client",)

    def describe_money(self, obj: Payout) -> list[tuple[str, Any]]:
        dest = f"{obj.currency.upper()} on {obj.network}: "
        return [
            ("amount", usdt(obj.usdt_amount)),
            ("client", f"{obj.client.reference} ({obj.client.name})"),
            ("destination", format_html("{}{}", dest, address_link(obj.address, obj.network))),
        ]

    def summary(self, obj: Payout) -> list[tuple[str, Any]]:
        return [
            (
                "client",
                change_link(Client, obj.client_id, f"{obj.client.reference} ({obj.client.name})"),
            ),
            ("rows", obj.row_count),
            ("amount", usdt(obj.usdt_amount)),
            (
                "destination",
                format_html(
                    "{} on {}: {}{}",
                    obj.currency.upper(),
                    obj.network,
                    address_link(obj.address, obj.network),
                    f" (extra id {obj.extra_id})" if obj.extra_id else "",
                ),
            ),
            (
                "client received",
                f"{fmt_decimal(obj.amount_to)} {obj.currency.upper()}"
                if obj.amount_to is not None
                else "—",
            ),
        ]


# --- accumulations ------------------------------------------------------------------------


@admin.register(Accumulation)
class AccumulationAdmin(ReadOnlyAdmin):
    list_display = (
        "payment_id",
        "client_link",
        "eth_amount",
        "usd_amount",
        "fee",
        "usdt_amount",
        "state_display",
        "batch_link",
        "payout_link",
        "created",
    )
    list_display_links = ("payment_id",)
    created = datetime_column("created_at", "credited")
    list_select_related = ("client",)
    list_filter = ("state", ClientReferenceFilter, ("created_at", DATE_FILTER))
    search_fields = ("payment_id",)  # shows the box; see get_search_results
    search_help_text = (
        "Exact payment id, client reference, batch or payout id, exchange id or transaction hash."
    )
    actions: ClassVar[Sequence[str]] = ["export_csv"]
    export_columns = (
        ("id", "id"),
        ("payment_id", "payment_id"),
        ("order_id", "order_id"),
        ("client_reference", "client__reference"),
        ("eth", "eth"),
        ("usd", "usd"),
        ("fee_percent", "fee_percent"),
        ("usdt", "usdt"),
        ("state", "state"),
        ("batch_id", "batch_id"),
        ("payout_id", "payout_id"),
        ("created_at", "created_at"),
        ("state_changed_at", "state_changed_at"),
    )
    readonly_fields = ("journey",)
    fieldsets = (
        ("Where this payment is", {"fields": ("journey",)}),
        (
            None,
            {
                "fields": (
                    "payment_id",
                    "order_id",
                    "client",
                    "state",
                    "eth",
                    "usd",
                    "fee_percent",
                    "usdt",
                    "batch",
                    "payout",
                    "created_at",
                    "state_changed_at",
                )
            },
        ),
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        # A payment id matches that payment only (not the rest of its batch).
        batch_ids, payout_ids = orders_matching(term, by_payment=False)
        client_ids = list(Client.objects.filter(reference=term).values_list("id", flat=True))
        query = Q(payment_id=term)
        if client_ids:
            query |= Q(client_id__in=client_ids)
        if batch_ids:
            query |= Q(batch_id__in=batch_ids)
        if payout_ids:
            query |= Q(payout_id__in=payout_ids)
        return queryset.filter(query), False

    page_select_related = ("client", "batch", "payout")

    @admin.display(description="client", ordering="client__reference")
    def client_link(self, obj: Accumulation) -> Any:
        return change_link(Client, obj.client_id, obj.client.reference)

    @admin.display(description="ETH", ordering="eth")
    def eth_amount(self, obj: Accumulation) -> str:
        return fmt_decimal(obj.eth)

    @admin.display(description="USD", ordering="usd")
    def usd_amount(self, obj: Accumulation) -> str:
        return fmt_decimal(obj.usd, 2)

    @admin.display(description="fee %")
    def fee(self, obj: Accumulation) -> str:
        return fmt_decimal(obj.fee_percent)

    @admin.display(description="USDT", ordering="usdt")
    def usdt_amount(self, obj: Accumulation) -> str:
        return fmt_decimal(obj.usdt, 6) if obj.usdt is not None else "—"

    @admin.display(description="state", ordering="state")
    def state_display(self, obj: Accumulation) -> Any:
        return state_badge(obj.state)

    @admin.display(description="batch")
    def batch_link(self, obj: Accumulation) -> Any:
        model = apps.get_model("batches", "ConversionBatch")
        return change_link(model, obj.batch_id) if obj.batch_id else "—"

    @admin.display(description="payout")
    def payout_link(self, obj: Accumulation) -> Any:
        return change_link(Payout, obj.payout_id) if obj.payout_id else "—"

    @admin.display(description="summary")
    def journey(self, obj: Accumulation) -> Any:
        """Story 2: credited when, converted in which batch at what rate, paid in which
        payout, or waiting for what."""
        lines = [
            format_html(
                "Credited {} ago ({}) to {}: {} worth {}, platform fee {} %.",
                age(obj.created_at),
                obj.created_at.strftime("%Y-%m-%d %H:%M UTC"),
                change_link(Client, obj.client_id, obj.client.reference),
                eth(obj.eth),
                usd(obj.usd),
                fmt_decimal(obj.fee_percent),
            )
        ]
        if obj.state == "pending":
            lines.append(escape("Pending: waits for the next conversion sweep."))
        if obj.batch_id:
            batch = obj.batch
            model = apps.get_model("batches", "ConversionBatch")
            if obj.usdt is not None:
                fee_eth = obj.eth * obj.fee_percent / 100
                lines.append(
                    format_html(
                        "Converted in batch {} ({}): {} → {}; fee {} ETH kept by the platform.",
                        change_link(model, obj.batch_id),
                        batch.state,
                        eth(obj.eth),
                        usdt(obj.usdt),
                        fmt_decimal(fee_eth.quantize(Decimal("1e-12"))),
                    )
                )
            else:
                lines.append(
                    format_html(
                        "In batch {}, which is {}.", change_link(model, obj.batch_id), batch.state
                    )
                )
        if obj.payout_id:
            lines.append(
                format_html(
                    "Paid out in payout {} ({}), {} to {}.",
                    change_link(Payout, obj.payout_id),
                    obj.payout.state,
                    usdt(obj.payout.usdt_amount),
                    obj.payout.address,
                )
            )
        elif obj.state == "converted":
            client = obj.client
            balance = (
                Accumulation.objects.filter(client_id=obj.client_id, state="converted").aggregate(
                    s=Sum("usdt")
                )["s"]
                or 0
            )
            lines.append(
                format_html(
                    "Waiting for the client's payout: balance {} of a {} threshold ({}).",
                    usdt(balance),
                    usd(client.payout_threshold_usd),
                    client.get_payout_strategy_display(),
                )
            )
        webhooks = admin_url_by_name("backoffice", "webhookevent")
        if webhooks:
            lines.append(
                format_html('<a href="{}?q={}">Webhook deliveries</a>', webhooks, obj.payment_id)
            )
        # Every line is already escaped (format_html / escape).
        return mark_safe("<br>".join(lines))  # noqa: S308


def admin_url_by_name(app_label: str, model_name: str, view: str = "changelist") -> str:
    try:
        return reverse(f"admin:{app_label}_{model_name}_{view}")
    except NoReverseMatch:  # the app may not be installed
        return ""


# --- clients ------------------------------------------------------------------------------


class ClientForm(forms.ModelForm):
    """Edits go through `client_validate` (addresses checked per network) and
    `client_upsert` (destination changes audited), with the reason on record."""

    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        required=False,
        help_text="Why (recorded in the audit trail). Required when changing a client.",
    )

    class Meta:
        model = Client
        fields = (
            "reference",
            "name",
            "payout_strategy",
            "payout_threshold_usd",
            "payout_currency",
            "payout_network",
            "payout_address",
            "payout_extra_id",
            "fee_percent",
            "active",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plain_initial(self)
        for name in ("payout_address", "payout_extra_id", "name"):
            if name in self.fields:
                self.fields[name].widget.attrs["size"] = 70

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.errors:
            return data
        if self.instance.pk and not (data.get("reason") or "").strip():
            self.add_error("reason", "A reason is required to change a client.")
            return data
        raw = {
            "reference": self.instance.reference if self.instance.pk else data.get("reference"),
            "name": data.get("name") or "",
            "payout_strategy": data.get("payout_strategy") or "",
            "payout_threshold_usd": str(data.get("payout_threshold_usd") or 0),
            "payout_currency": data.get("payout_currency") or "",
            "payout_network": data.get("payout_network") or "",
            "payout_address": data.get("payout_address") or "",
            "payout_extra_id": data.get("payout_extra_id") or "",
            "fee_percent": "" if data.get("fee_percent") is None else str(data["fee_percent"]),
        }
        try:
            cleaned = client_validate(data=raw)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        cleaned["active"] = bool(data.get("active"))
        self.validated = cleaned
        return data


@admin.register(Client)
class ClientAdmin(ReadOnlyAdmin):
    editable = True
    form = ClientForm
    change_form_template = "admin/backoffice/client_change_form.html"
    list_display = (
        "reference",
        "name",
        "payout_strategy",
        "threshold",
        "destination",
        "fee_override",
        "owed",
        "active",
    )
    list_filter = ("active", "payout_strategy", "payout_currency")
    search_fields = ("reference", "name")
    search_help_text = "Client reference or name."
    actions: ClassVar[Sequence[str]] = ["export_csv"]
    export_columns = (
        ("reference", "reference"),
        ("name", "name"),
        ("payout_strategy", "payout_strategy"),
        ("payout_threshold_usd", "payout_threshold_usd"),
        ("payout_currency", "payout_currency"),
        ("payout_network", "payout_network"),
        ("payout_address", "payout_address"),
        ("payout_extra_id", "payout_extra_id"),
        ("fee_percent", "fee_percent"),
        ("active", "active"),
        ("created_at", "created_at"),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Converted USDT owed, per listed client: an index-only lookup (acc_converted_idx).
        owed = (
            Accumulation.objects.filter(client_id=OuterRef("id"), state="converted")
            .order_by()
            .values("client_id")
            .annotate(s=Sum("usdt"))
            .values("s")
        )
        return super().get_queryset(request).annotate(owed_usdt=Subquery(owed))

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("payouts.add_client")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Sequence[str]:
        if not self.has_change_permission(request, obj):
            return [f.name for f in Client._meta.concrete_fields]
        return ("reference", "created_at", "updated_at") if obj else ("created_at", "updated_at")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Sequence[str]:
        fields = [*ClientForm._meta.fields]  # type: ignore[misc]
        if self.has_change_permission(request, obj):
            fields.append("reason")
        return fields

    def save_model(self, request: HttpRequest, obj: Client, form: Any, change: bool) -> None:
        reason = (form.cleaned_data.get("reason") or "").strip() or "created in admin"
        client, _outcome = client_upsert(
            data=form.validated, actor=Actor.of_user(request.user), reason=reason
        )
        obj.pk = client.pk
        obj.refresh_from_db()

    @admin.display(description="threshold", ordering="payout_threshold_usd")
    def threshold(self, obj: Client) -> str:
        return usd(obj.payout_threshold_usd)

    @admin.display(description="paid in")
    def destination(self, obj: Client) -> str:
        return f"{obj.payout_currency.upper()}/{obj.payout_network} {obj.payout_address[:12]}…"

    @admin.display(description="fee override")
    def fee_override(self, obj: Client) -> str:
        return percent(obj.fee_percent) if obj.fee_percent is not None else "platform"

    @admin.display(description="converted, unpaid")
    def owed(self, obj: Client) -> Any:
        if not obj.owed_usdt:
            return "—"
        url = f"{admin_url(Accumulation)}?client={obj.reference}&state__exact=converted"
        return format_html('<a href="{}">{}</a>', url, fmt_decimal(obj.owed_usdt, 6))

    def page_context(self, request: HttpRequest, obj: Client) -> dict[str, Any]:
        balances = sorted(
            Accumulation.objects.filter(client_id=obj.pk)
            .order_by()
            .values("state")
            .annotate(n=Count("id"), eth=Sum("eth"), usd=Sum("usd"), usdt=Sum("usdt")),
            key=lambda b: ACCUMULATION_STATES.index(b["state"]),
        )
        rows_url = f"{admin_url(Accumulation)}?client={obj.reference}"
        timeline = audit_details(
            list(
                AuditEvent.objects.filter(object_type="client", object_id=str(obj.pk)).order_by(
                    "-id"
                )[:50]
            )
        )
        return {
            "balances": [
                {
                    "state": b["state"],
                    "n": b["n"],
                    "eth": eth(b["eth"]),
                    "usd": usd(b["usd"]),
                    "usdt": usdt(b["usdt"]) if b["usdt"] is not None else "—",
                    "url": f"{rows_url}&state__exact={b['state']}",
                }
                for b in balances
            ],
            "rows_url": rows_url,
            "recent_rows": list(Accumulation.objects.filter(client_id=obj.pk).order_by("-id")[:10]),
            "recent_payouts": list(
                Payout.objects.filter(client_id=obj.pk).order_by("-created_at")[:10]
            ),
            "payouts_url": f"{admin_url(Payout)}?client={obj.reference}",
            "destination_changes": [e for e in timeline if e.kind == "payout_destination_changed"],
            "timeline": timeline,
            "timeline_url": audit_url("client", obj.pk),
        }


# --- audit events -------------------------------------------------------------------------

AUDIT_OBJECT_TYPES = (
    ("conversionbatch", "conversion batch"),
    ("payout", "payout"),
    ("accumulation", "accumulation"),
    ("client", "client"),
    ("runtimesettings", "run-time settings"),
    ("webhookevent", "webhook event"),
)
AUDIT_OBJECT_MODELS = {
    "conversionbatch": ("batches", "conversionbatch"),
    "payout": ("payouts", "payout"),
    "accumulation": ("payouts", "accumulation"),
    "client": ("payouts", "client"),
    "runtimesettings": ("payouts", "runtimesettings"),
    "webhookevent": ("backoffice", "webhookevent"),
}


class ObjectTypeFilter(admin.SimpleListFilter):
    title = "object type"
    parameter_name = "object_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> Sequence[tuple[str, str]]:
        return AUDIT_OBJECT_TYPES

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(object_type=self.value()) if self.value() else queryset


class ObjectIdFilter(InputFilter):
    title = "object id"
    parameter_name = "object_id"
    lookup = "object_id"
    placeholder = "batch / payout / client id"


class KindFilter(InputFilter):
    title = "kind"
    parameter_name = "kind"
    lookup = "kind"
    placeholder = "e.g. transition, setting_changed"


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "when",
        "object_link",
        "kind",
        "move",
        "actor",
        "short_reason",
    )
    list_filter = (ObjectTypeFilter, ObjectIdFilter, KindFilter, ("created_at", DATE_FILTER))
    when = datetime_column("created_at", "when")
    search_fields = ("object_id",)
    search_help_text = "Exact object id or actor (user:<name>, system:<job>)."
    actions: ClassVar[Sequence[str]] = ["export_csv"]
    export_columns = (
        ("id", "id"),
        ("created_at", "created_at"),
        ("object_type", "object_type"),
        ("object_id", "object_id"),
        ("kind", "kind"),
        ("from_state", "from_state"),
        ("to_state", "to_state"),
        ("actor", "actor"),
        ("reason", "reason"),
        ("data", "data"),
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.filter(Q(object_id=term) | Q(actor=term)), False

    @admin.display(description="object")
    def object_link(self, obj: AuditEvent) -> Any:
        target = AUDIT_OBJECT_MODELS.get(obj.object_type)
        label = f"{obj.object_type} {short_id(obj.object_id)}"
        if target is None:
            return label
        try:
            url = reverse(f"admin:{target[0]}_{target[1]}_change", args=[obj.object_id])
        except NoReverseMatch:  # an app without admin, an odd id
            return label
        return format_html('<a href="{}">{}</a>', url, label)

    @admin.display(description="move")
    def move(self, obj: AuditEvent) -> str:
        if obj.from_state or obj.to_state:
            return f"{obj.from_state or '∅'} → {obj.to_state or '∅'}"
        return ""

    @admin.display(description="reason")
    def short_reason(self, obj: AuditEvent) -> str:
        return obj.reason if len(obj.reason) <= 80 else obj.reason[:79] + "…"


# --- exchange attempts and transfers ------------------------------------------------------


def _order_link(obj: Any) -> Any:
    if obj.batch_id:
        return change_link(
            apps.get_model("batches", "ConversionBatch"),
            obj.batch_id,
            f"batch {short_id(obj.batch_id)}",
        )
    return change_link(Payout, obj.payout_id, f"payout {short_id(obj.payout_id)}")


@admin.register(ExchangeAttempt)
class ExchangeAttemptAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "order",
        "exchange_id",
        "status",
        "pair",
        "amount_from",
        "amount_to",
        "created",
    )
    list_filter = ("status", ("created_at", DATE_FILTER))
    created = datetime_column("created_at", "created")
    search_fields = ("exchange_id",)
    search_help_text = "Exact exchange id or deposit / payout transaction hash."
    actions: ClassVar[Sequence[str]] = ["export_csv"]
    export_columns = (
        ("id", "id"),
        ("batch_id", "batch_id"),
        ("payout_id", "payout_id"),
        ("exchange_id", "exchange_id"),
        ("status", "status"),
        ("from_currency", "from_currency"),
        ("to_currency", "to_currency"),
        ("amount_from", "amount_from"),
        ("amount_to", "amount_to"),
        ("payin_hash", "payin_hash"),
        ("payout_hash", "payout_hash"),
        ("created_at", "created_at"),
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        return (
            queryset.filter(Q(exchange_id=term) | Q(payin_hash=term) | Q(payout_hash=term)),
            False,
        )

    @admin.display(description="order")
    def order(self, obj: ExchangeAttempt) -> Any:
        return _order_link(obj)

    @admin.display(description="pair")
    def pair(self, obj: ExchangeAttempt) -> str:
        return f"{obj.from_currency}→{obj.to_currency}/{obj.to_network}"


@admin.register(Transfer)
class TransferAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "order",
        "asset",
        "amount",
        "to_address",
        "state_display",
        "hash_link",
        "nonce",
        "created",
    )
    list_filter = ("state", "asset", ("created_at", DATE_FILTER))
    created = datetime_column("created_at", "created")
    search_fields = ("tx_hash",)
    search_help_text = "Exact transaction hash or destination address."
    actions: ClassVar[Sequence[str]] = ["export_csv"]
    export_columns = (
        ("id", "id"),
        ("batch_id", "batch_id"),
        ("payout_id", "payout_id"),
        ("attempt", "attempt"),
        ("asset", "asset"),
        ("amount", "amount"),
        ("to_address", "to_address"),
        ("nonce", "nonce"),
        ("state", "state"),
        ("tx_hash", "tx_hash"),
        ("created_at", "created_at"),
        ("mined_at", "mined_at"),
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        return (
            queryset.filter(Q(tx_hash__in={term, term.lower()}) | Q(to_address=term)),
            False,
        )

    @admin.display(description="order")
    def order(self, obj: Transfer) -> Any:
        return _order_link(obj)

    @admin.display(description="state", ordering="state")
    def state_display(self, obj: Transfer) -> Any:
        return state_badge(obj.state)

    @admin.display(description="transaction")
    def hash_link(self, obj: Transfer) -> Any:
        return tx_link(obj.tx_hash)


# --- run-time settings --------------------------------------------------------------------

PAUSE_SWITCHES: Mapping[str, str] = {
    "conversions_paused": "conversions",
    "payouts_paused": "payouts",
}


class RuntimeSettingsForm(forms.ModelForm):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Why (recorded with the old and new value of each change).",
    )

    class Meta:
        model = RuntimeSettings
        fields = SETTINGS_EDITABLE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plain_initial(self)


@admin.register(RuntimeSettings)
class RuntimeSettingsAdmin(admin.ModelAdmin):
    """One page: the settings row. Saving calls `runtime_settings_update`, which audits each
    changed value (old and new); jobs read the row at their next run."""

    form = RuntimeSettingsForm
    change_form_template = "admin/backoffice/settings_change_form.html"
    fieldsets = (
        ("Conversion", {"fields": ("conversion_threshold_usd", "max_pending_age_minutes")}),
        ("Fees", {"fields": ("platform_fee_percent",)}),
        (
            "Schedules (seconds)",
            {
                "fields": (
                    "conversion_sweep_interval_seconds",
                    "payout_sweep_interval_seconds",
                    "advance_interval_seconds",
                )
            },
        ),
        (
            "Stuck limits (minutes in a state before an order is flagged)",
            {
                "fields": (
                    "stuck_reserved_minutes",
                    "stuck_exchange_created_minutes",
                    "stuck_funds_sent_minutes",
                    "stuck_converting_minutes",
                )
            },
        ),
        ("Kill switches", {"fields": ("conversions_paused", "payouts_paused")}),
        ("Why", {"fields": ("reason",)}),
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if self.has_change_permission(request, obj):
            return self.fieldsets
        return self.fieldsets[:-1]  # no reason box for a read-only view

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Sequence[str]:
        if not self.has_change_permission(request, obj):
            return SETTINGS_EDITABLE
        # The kill switches are the pause permission's, not every settings editor's.
        if not request.user.has_perm("payouts.pause_jobs"):
            return tuple(PAUSE_SWITCHES)
        return ()

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        row = runtime_settings_get()
        return HttpResponseRedirect(admin_url(RuntimeSettings, "change", row.pk))

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        runtime_settings_get()
        history = list(
            AuditEvent.objects.filter(object_type="runtimesettings").order_by("-id")[:30]
        )
        context = {
            **(extra_context or {}),
            "history": history,
            "timeline_url": f"{admin_url(AuditEvent)}?object_type=runtimesettings",
            "switches": self.switches(request),
            "title": "Run-time settings",
        }
        return super().change_view(request, object_id, form_url, extra_context=context)

    def switches(self, request: HttpRequest) -> list[dict[str, Any]]:
        row = _runtime(request)
        allowed = request.user.has_perm("payouts.pause_jobs")
        return [
            {
                "what": what,
                "paused": getattr(row, name),
                "url": reverse(
                    "admin:payouts_runtimesettings_switch",
                    args=[name, "off" if getattr(row, name) else "on"],
                )
                if allowed
                else "",
            }
            for name, what in PAUSE_SWITCHES.items()
        ]

    def save_model(
        self, request: HttpRequest, obj: RuntimeSettings, form: Any, change: bool
    ) -> None:
        changes = {
            name: form.cleaned_data[name] for name in form.changed_data if name in SETTINGS_EDITABLE
        }
        if any(name in PAUSE_SWITCHES for name in changes):
            require_permission(request, "payouts.pause_jobs")
        runtime_settings_update(
            changes=changes, actor=Actor.of_user(request.user), reason=form.cleaned_data["reason"]
        )
        obj.refresh_from_db()

    def get_urls(self) -> list[Any]:
        return [
            path(
                "switch/<str:name>/<str:to>/",
                self.admin_site.admin_view(self.switch_view),
                name="payouts_runtimesettings_switch",
            ),
            *super().get_urls(),
        ]

    def switch_view(self, request: HttpRequest, name: str, to: str) -> HttpResponse:
        """Pause or resume conversions or payouts: a confirmation page, then
        `runtime_settings_update` with the reason (audited, effective at the next run)."""
        require_permission(request, "payouts.pause_jobs")
        if name not in PAUSE_SWITCHES or to not in ("on", "off"):
            raise PermissionDenied
        paused = to == "on"
        what = PAUSE_SWITCHES[name]
        errors: list[str] = []
        reason = (request.POST.get("reason") or "").strip()
        if request.method == "POST":
            if not reason:
                errors.append("A reason is required: it is recorded in the audit trail.")
            else:
                runtime_settings_update(
                    changes={name: paused}, actor=Actor.of_user(request.user), reason=reason
                )
                verb = "paused" if paused else "resumed"
                self.message_user(
                    request, f"{what.capitalize()} {verb} (audited).", messages.SUCCESS
                )
                # Only back into this site: a crafted link must not bounce to another host.
                target = request.GET.get("next") or ""
                if not url_has_allowed_host_and_scheme(
                    target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
                ):
                    target = reverse("admin:index")
                return HttpResponseRedirect(target)
        effect = (
            f"The {'conversion' if what == 'conversions' else 'payout'} sweep will do nothing "
            "from its next run until resumed; orders already under way continue."
            if paused
            else f"The {'conversion' if what == 'conversions' else 'payout'} sweep runs again "
            "from its next run."
        )
        context = {
            **self.admin_site.each_context(request),
            "title": f"{'Pause' if paused else 'Resume'} {what}: are you sure?",
            "opts": RuntimeSettings._meta,
            "effect": effect,
            "currently": "paused" if getattr(_runtime(request), name) else "running",
            "reason": reason,
            "errors": errors,
            "verb": f"{'Pause' if paused else 'Resume'} {what}",
            "danger": paused,
            "cancel_url": reverse("admin:index"),
        }
        return TemplateResponse(request, "admin/backoffice/confirm_switch.html", context)
