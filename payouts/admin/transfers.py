"""Transfers: every payment the host wallet signed, with its transactions."""

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
    hash_prefix,
    order_link,
    transfers_by_hash_prefix,
)
from payouts.admin.support import (
    ReadOnlyAdmin,
    datetime_column,
    state_badge,
    tx_link,
)
from payouts.models import (
    Transfer,
)


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
    search_help_text = (
        "A transaction hash (whole, or its first 8 characters or more: speed-ups and "
        "cancels too) or a destination address."
    )
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
        query = Q(tx_hash__in={term, term.lower()}) | Q(to_address=term)
        prefix = hash_prefix(term)
        if prefix:
            query |= Q(pk__in=transfers_by_hash_prefix(prefix))
        return queryset.filter(query), False

    @admin.display(description="order")
    def order(self, obj: Transfer) -> Any:
        return order_link(obj)

    @admin.display(description="state", ordering="state")
    def state_display(self, obj: Transfer) -> Any:
        return state_badge(obj.state)

    @admin.display(description="transaction")
    def hash_link(self, obj: Transfer) -> Any:
        return tx_link(obj.tx_hash)
