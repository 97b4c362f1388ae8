"""The accumulations' list and page: one credited payment each, with its batch and payout."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, ClassVar

from django.apps import apps
from django.contrib import admin
from django.db.models import (
    Q,
    QuerySet,
    Sum,
)
from django.http import HttpRequest
from django.utils.html import escape, format_html
from django.utils.safestring import mark_safe

from payouts.admin.shared import (
    DATE_FILTER,
    admin_url_by_name,
    orders_matching,
)
from payouts.admin.support import (
    ClientReferenceFilter,
    ReadOnlyAdmin,
    age,
    change_link,
    datetime_column,
    eth,
    fmt_decimal,
    state_badge,
    usd,
    usdt,
)
from payouts.models import (
    Accumulation,
    Client,
    Payout,
)


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
        "Exact payment id, NOWPayments order_id, client reference, batch or payout id, "
        "exchange id, or a transaction hash (its first 8 characters or more)."
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
        query = Q(payment_id=term) | Q(order_id=term)
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
