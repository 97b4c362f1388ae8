"""The page of a funded exchange order (`FundedOrderAdmin`, which conversion batches reuse)
and the payouts' page, with the operator actions of both."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from django.contrib import admin
from django.db.models import (
    BooleanField,
    Case,
    Count,
    Q,
    QuerySet,
    Sum,
    Value,
    When,
)
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from payouts import approvals, operator
from payouts.admin.shared import (
    DATE_FILTER,
    _history_entry,
    _runtime,
    audit_timeline,
    audit_url,
    orders_matching,
)
from payouts.admin.support import (
    ActionSpec,
    ClientReferenceFilter,
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
    short_id,
    state_badge,
    stuck_q,
    tx_link,
    usd,
    usdt,
)
from payouts.models import (
    Accumulation,
    Client,
    ExchangeAttempt,
    Payout,
    Transfer,
)
from payouts.transitions import Actor

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
        permission="payouts.request_changes",
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
        permission="payouts.request_changes",
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
        permission="payouts.request_changes",
        needs_reason=True,
        summary=(
            "Re-signs the pending transaction at the same nonce with both fee caps raised at "
            "least 12.5% (never above the fee ceiling). Only one of the two can ever mine."
        ),
    ),
    "cancel_transfer": ActionSpec(
        name="cancel_transfer",
        verb="Cancel the transfer",
        permission="payouts.request_changes",
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
# Actions on money that one person asks for and another approver decides (dual control).
DUAL_CONTROL = frozenset({"force_close", "force_complete", "speed_up", "cancel_transfer"})
DUAL_CONTROL_NOTE = (
    " Under dual control: confirming records a request; it runs only when another approver "
    "approves it (Approval requests), and is checked again then."
)
ORDER_ACTIONS = {
    name: replace(spec, summary=spec.summary + DUAL_CONTROL_NOTE) if name in DUAL_CONTROL else spec
    for name, spec in ORDER_ACTIONS.items()
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
        attempts = self.attempts(obj)
        # One status source on the page: the current exchange's attempt, as the attempts
        # table below shows it (the order's own copy can lag a poll behind).
        current = next((a for a in reversed(attempts) if a.exchange_id == obj.exchange_id), None)
        status = (current.status if current and obj.exchange_id else obj.provider_status) or "—"
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
            ("ChangeNOW status", status),
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
            "attempts": attempts,
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
            if name in DUAL_CONTROL:
                req = approvals.approval_request(
                    action=name,
                    kind=kind,
                    order_id=obj.pk,
                    reason=reason,
                    user=request.user,
                    options={"write_off": options.get("write_off", False), "refund_tx": refund_tx}
                    if name == "force_close"
                    else {},
                )
                return True, f"request #{req.pk} waits for another approver"
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
            refusals=(operator.OperatorError, approvals.ApprovalError),
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
        ("completed_at", DATE_FILTER),
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
