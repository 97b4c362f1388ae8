"""Admin pages of the project layer: inbound webhook events (with "resolve" for unmatched
payments), job heartbeats and alerts."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, ClassVar

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from backoffice.models import Alert, JobRun, WebhookEvent, readable_body
from backoffice.operations import alert_acknowledge, alert_resolve
from backoffice.services import REVERSAL_REASON, ResolveError, webhook_event_resolve
from integrations.errors import MalformedPayload
from integrations.nowpayments.ipn import parse_ipn_body
from payouts.admin.shared import DATE_FILTER
from payouts.admin.support import (
    ActionSpec,
    InputFilter,
    ReadOnlyAdmin,
    admin_url,
    age,
    change_link,
    confirmed_action,
    datetime_column,
    percent,
    state_badge,
    usd,
)
from payouts.models import Accumulation, Client
from payouts.services import client_fee_percent, runtime_settings_get
from payouts.transitions import Actor

RESOLVE = ActionSpec(
    name="resolve_events",
    verb="Resolve: credit to a client",
    permission="payouts.resolve_webhooks",
    needs_reason=True,
    summary=(
        "Credits each unmatched NOWPayments payment to the client you name, exactly once, "
        "from the facts in the stored, verified body (never from what is typed here)."
    ),
    max_objects=50,
)


def _payload(event: WebhookEvent) -> dict[str, Any]:
    """The stored body as an object, if it is one within the webhook limits (a stored body
    may be anything a sender posted: it is never handed to an unbounded parser)."""
    try:
        return parse_ipn_body(event.body or b"")
    except MalformedPayload:
        return {}


class ReversalFilter(admin.SimpleListFilter):
    """Refunded or partly paid reports for payments already credited (DESIGN 12.6)."""

    title = "reversal after credit"
    parameter_name = "reversal"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "refunded / partially paid after credit")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "yes":
            return queryset.filter(reason__startswith=REVERSAL_REASON)
        return queryset


@admin.register(WebhookEvent)
class WebhookEventAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "received",
        "provider",
        "outcome_display",
        "payment_id",
        "reference",
        "signature_valid",
        "short_reason",
        "credited",
    )
    list_filter = (
        "outcome",
        "provider",
        "signature_valid",
        ReversalFilter,
        ("received_at", DATE_FILTER),
    )
    received = datetime_column("received_at", "received")
    search_fields = ("payment_id",)
    search_help_text = "Exact payment id, order id / exchange id, or event id."
    actions: ClassVar = ["resolve_events", "export_csv"]
    action_permissions: ClassVar = {
        "export_csv": "payouts.export_data",
        "resolve_events": RESOLVE.permission,
    }
    readonly_fields = ("body_pretty",)
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "provider",
                    "event_id",
                    "received_at",
                    "signature_valid",
                    "outcome",
                    "reason",
                    "payment_id",
                    "reference",
                    "accumulation",
                    "resolved_at",
                    "resolved_by",
                    "request_id",
                )
            },
        ),
        ("Body as received", {"fields": ("body_pretty", "headers")}),
    )
    export_columns: ClassVar = (
        ("id", "id"),
        ("provider", "provider"),
        ("event_id", "event_id"),
        ("received_at", "received_at"),
        ("signature_valid", "signature_valid"),
        ("outcome", "outcome"),
        ("reason", "reason"),
        ("payment_id", "payment_id"),
        ("reference", "reference"),
        ("accumulation_id", "accumulation_id"),
        ("resolved_at", "resolved_at"),
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        query = Q(payment_id=term) | Q(reference=term) | Q(event_id=term)
        return queryset.filter(query), False

    @admin.display(description="outcome", ordering="outcome")
    def outcome_display(self, obj: WebhookEvent) -> Any:
        return state_badge(obj.outcome)

    @admin.display(description="reason")
    def short_reason(self, obj: WebhookEvent) -> str:
        return obj.reason if len(obj.reason) <= 60 else obj.reason[:59] + "…"

    @admin.display(description="credited as")
    def credited(self, obj: WebhookEvent) -> Any:
        if not obj.accumulation_id:
            return "—"
        return change_link(Accumulation, obj.accumulation_id, str(obj.accumulation_id))

    @admin.display(description="body")
    def body_pretty(self, obj: WebhookEvent) -> Any:
        """Indented when it is a JSON object, else the bytes as text; either way invalid
        UTF-8, NUL and other invisible characters appear as escapes."""
        payload = _payload(obj)
        if payload:
            text = readable_body(json.dumps(payload, indent=2, default=str, ensure_ascii=False))
        else:
            text = obj.body_text
        return format_html('<pre class="bo-pre">{}</pre>', text)

    def object_actions(self, request: HttpRequest, obj: WebhookEvent) -> list[dict[str, Any]]:
        if obj.outcome != WebhookEvent.Outcome.UNMATCHED:
            return []
        if not request.user.has_perm(RESOLVE.permission):
            return []
        return [{"name": RESOLVE.name, "verb": RESOLVE.verb, "danger": False}]

    @admin.action(description="Resolve: credit to a client…")
    def resolve_events(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        """Three steps: name the client, see exactly what will be credited to whom, confirm.
        A client typed after the page was shown must be reviewed again before anything is
        credited."""
        reference = (request.POST.get("client_reference") or "").strip()
        reviewed = (request.POST.get("reviewed_client") or "").strip()
        client = Client.objects.filter(reference=reference).first() if reference else None
        fee = client_fee_percent(client=client, runtime=runtime_settings_get()) if client else None

        def describe(event: WebhookEvent) -> dict[str, Any]:
            payload = _payload(event)
            eth_amount = payload.get("outcome_amount")
            usd_amount = payload.get("price_amount")
            facts = [
                ("payment id", event.payment_id or "—"),
                ("order id", payload.get("order_id") or "—"),
                ("status", payload.get("payment_status") or "—"),
                (
                    "amount",
                    f"{eth_amount} {str(payload.get('outcome_currency') or '').upper()} "
                    f"(price {usd_amount} {str(payload.get('price_currency') or '').upper()})",
                ),
                ("why unmatched", event.reason or "—"),
            ]
            warning = ""
            if event.outcome != WebhookEvent.Outcome.UNMATCHED:
                warning = f"Will be skipped: the event is {event.outcome}, not unmatched."
            if client is not None:
                effect = format_html(
                    "Credits {} ETH worth {} to {} ({}), platform fee {}; it joins the next "
                    "conversion sweep.",
                    eth_amount,
                    usd(Decimal(str(usd_amount))) if usd_amount is not None else "?",
                    client.reference,
                    client.name,
                    percent(fee),
                )
            else:
                effect = "Credits the payment to the client you name below."
            return {
                "label": f"event {event.pk} (payment {event.payment_id})",
                "url": admin_url(event, "change", event.pk),
                "facts": facts,
                "effect": effect,
                "warning": warning,
            }

        def execute(event: WebhookEvent, reason: str, _options: Any) -> tuple[bool, str]:
            resolved = webhook_event_resolve(
                event_id=event.pk,
                client_reference=reference,
                actor=Actor.of_user(request.user),
                reason=reason,
            )
            return True, f"credited to {reference} as accumulation {resolved.accumulation_id}"

        def check(_request: HttpRequest) -> list[str]:
            if not reference:
                return ["Name the client to credit."]
            if client is None:
                return [f"No client with reference {reference!r}."]
            if reviewed != reference:
                return ["Check the client and amounts below, then confirm again."]
            return []

        return confirmed_action(
            self,
            request,
            queryset,
            spec=RESOLVE,
            describe=describe,
            execute=execute,
            refusals=(ResolveError,),
            inputs=[
                {
                    "name": "client_reference",
                    "label": "Client reference",
                    "value": reference,
                    "help": "The merchant this payment belongs to.",
                },
            ],
            hidden={"reviewed_client": reference if client is not None else ""},
            check=check,
        )


class JobNameFilter(InputFilter):
    title = "job"
    parameter_name = "name"
    lookup = "name"
    placeholder = "e.g. conversion_sweep"


@admin.register(JobRun)
class JobRunAdmin(ReadOnlyAdmin):
    list_display = ("name", "started", "took", "outcome_display", "summary", "error")
    started = datetime_column("started_at", "started")
    list_filter = (JobNameFilter, "outcome", ("started_at", DATE_FILTER))
    ordering = ("-started_at",)

    @admin.display(description="outcome", ordering="outcome")
    def outcome_display(self, obj: JobRun) -> Any:
        tone = {"ok": "completed", "failed": "needs_attention"}.get(obj.outcome, "running")
        return format_html(
            '<span class="bo-state bo-{}">{}</span>',
            {"completed": "good", "needs_attention": "bad"}.get(tone, "busy"),
            obj.outcome,
        )

    @admin.display(description="took")
    def took(self, obj: JobRun) -> str:
        if obj.finished_at is None:
            return f"running for {age(obj.started_at)}"
        return f"{(obj.finished_at - obj.started_at).total_seconds():.1f} s"


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    list_display = ("last_seen_at", "status", "severity", "kind", "message", "link_display")
    list_filter = ("status", "severity", "kind")
    actions = ("acknowledge_alerts", "resolve_alerts")
    action_permissions: ClassVar = {
        **ReadOnlyAdmin.action_permissions,
        "acknowledge_alerts": "backoffice.change_alert",
        "resolve_alerts": "backoffice.change_alert",
    }

    @admin.action(description="Acknowledge selected alerts (someone is on it)")
    def acknowledge_alerts(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        ids = list(queryset.values_list("pk", flat=True)[:500])
        done = sum(alert_acknowledge(alert_id=pk, user=request.user) for pk in ids)
        self.message_user(request, f"{done} acknowledged, {len(ids) - done} skipped (not open)")

    @admin.action(description="Resolve selected alerts")
    def resolve_alerts(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        ids = list(queryset.values_list("pk", flat=True)[:500])
        done = sum(alert_resolve(alert_id=pk, user=request.user) for pk in ids)
        self.message_user(request, f"{done} resolved, {len(ids) - done} skipped (already resolved)")

    @admin.display(description="link")
    def link_display(self, obj: Alert) -> Any:
        return format_html('<a href="{}">open</a>', obj.link) if obj.link else "—"
