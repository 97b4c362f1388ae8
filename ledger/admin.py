"""The Ledger in admin: balances per account, each account's lines and each transaction's
legs with a link to what caused it. Read-only: the ledger only grows by postings."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, ClassVar

from django.apps import apps
from django.contrib import admin
from django.db.models import OuterRef, QuerySet, Subquery, Sum
from django.http import HttpRequest

from ledger.models import Account, LedgerTransaction, Leg
from ledger.services import natural_sign
from payouts.admin.shared import DATE_FILTER
from payouts.admin.support import (
    ReadOnlyAdmin,
    change_link,
    datetime_column,
    fmt_decimal,
    short_id,
)

LEGS_SHOWN = 200


def legs_context(legs: QuerySet, *, title: str, show_transaction: bool) -> dict[str, Any]:
    rows = list(legs[: LEGS_SHOWN + 1])
    for leg in rows:
        leg.credit = -leg.amount
    return {
        "legs": rows[:LEGS_SHOWN],
        "legs_more": len(rows) > LEGS_SHOWN,
        "legs_title": title,
        "show_transaction": show_transaction,
    }


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    change_form_template = "admin/ledger/change_form.html"
    list_display = ("name", "asset", "kind", "balance")
    list_filter = ("kind", "asset")
    search_fields = ("name",)
    search_help_text = "Account name: host_wallet, clients:<reference>, in_transit:<order id>, …"
    actions: ClassVar[Sequence[str]] = ["export_csv"]
    export_columns = (("name", "name"), ("asset", "asset"), ("kind", "kind"))

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # One index-only sum per listed account (ledger_leg_acct covers the amount).
        total = (
            Leg.objects.filter(account_id=OuterRef("id"))
            .order_by()
            .values("account_id")
            .annotate(s=Sum("amount"))
            .values("s")
        )
        return super().get_queryset(request).annotate(total=Subquery(total))

    @admin.display(description="balance")
    def balance(self, obj: Account) -> str:
        value = (obj.total or Decimal(0)) * natural_sign(obj.kind)
        return fmt_decimal(value, 6 if obj.asset == "usdt" else None)

    def page_context(self, request: HttpRequest, obj: Account) -> dict[str, Any]:
        legs = (
            Leg.objects.filter(account=obj)
            .select_related("transaction", "account")
            .order_by("-transaction_id")
        )
        return legs_context(legs, title="Lines", show_transaction=True)


CAUSES = (
    ("accumulation", "payouts", "accumulation"),
    ("batch", "batches", "conversionbatch"),
    ("payout", "payouts", "payout"),
    ("transfer", "payouts", "transfer"),
)


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    change_form_template = "admin/ledger/change_form.html"
    list_display = ("id", "when", "kind", "cause", "memo", "actor")
    list_filter = ("kind", ("created_at", DATE_FILTER))
    when = datetime_column("created_at", "when")
    search_fields = ("tx_hash",)
    search_help_text = "Exact transaction hash (0x…) or ledger transaction id."
    actions: ClassVar[Sequence[str]] = ["export_csv"]
    export_columns = (
        ("id", "id"),
        ("created_at", "created_at"),
        ("kind", "kind"),
        ("memo", "memo"),
        ("actor", "actor"),
        ("tx_hash", "tx_hash"),
        ("accumulation_id", "accumulation_id"),
        ("batch_id", "batch_id"),
        ("payout_id", "payout_id"),
        ("transfer_id", "transfer_id"),
    )

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        term = search_term.strip().lower()
        if not term:
            return queryset, False
        if term.isdigit():
            return queryset.filter(pk=int(term)), False
        return queryset.filter(tx_hash=term), False

    @admin.display(description="cause")
    def cause(self, obj: LedgerTransaction) -> Any:
        for field, app, model in CAUSES:
            pk = getattr(obj, f"{field}_id")
            if pk is not None:
                return change_link(apps.get_model(app, model), pk, f"{field} {short_id(pk)}")
        return obj.tx_hash[:12] + "…" if obj.tx_hash else "—"

    def page_context(self, request: HttpRequest, obj: LedgerTransaction) -> dict[str, Any]:
        legs = Leg.objects.filter(transaction=obj).select_related("account").order_by("id")
        return legs_context(legs, title="Legs", show_transaction=False)
