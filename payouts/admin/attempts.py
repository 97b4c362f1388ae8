"""ExchangeAttempts: every create call made to ChangeNOW, with its outcome."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from django.contrib import admin
from django.db.models import (
    Q,
    QuerySet,
)
from django.http import HttpRequest

from payouts.admin.shared import (
    DATE_FILTER,
    order_link,
)
from payouts.admin.support import (
    ReadOnlyAdmin,
    datetime_column,
)
from payouts.models import (
    ExchangeAttempt,
)


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
        query = Q(exchange_id=term) | Q(payin_hash=term) | Q(payout_hash=term)
        if len(term) >= 8:  # a hash prefix, as pages show them (a small table: no index)
            query |= Q(payin_hash__startswith=term) | Q(payout_hash__startswith=term)
        return queryset.filter(query), False

    @admin.display(description="order")
    def order(self, obj: ExchangeAttempt) -> Any:
        return order_link(obj)

    @admin.display(description="pair")
    def pair(self, obj: ExchangeAttempt) -> str:
        return f"{obj.from_currency}→{obj.to_currency}/{obj.to_network}"
