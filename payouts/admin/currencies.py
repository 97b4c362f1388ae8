"""ChangeNOW's currency catalogue: what clients may be paid in, and a button to refresh it
now (the schedule does it daily)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse

from payouts.admin.support import ReadOnlyAdmin, datetime_column, require_permission
from payouts.currencies import CurrencyError, currency_catalogue_refresh
from payouts.models import Currency
from payouts.transitions import Actor


@admin.register(Currency)
class CurrencyAdmin(ReadOnlyAdmin):
    change_list_template = "admin/backoffice/currency_change_list.html"
    list_display = (
        "ticker",
        "network",
        "name",
        "has_external_id",
        "is_fiat",
        "active",
        "refreshed",
    )
    refreshed = datetime_column("refreshed_at", "last listed")
    list_filter = ("active", "is_fiat", "has_external_id", "network")
    search_fields = ("ticker", "name", "legacy_ticker")
    search_help_text = "Ticker, name or ChangeNOW's legacy ticker (e.g. usdterc20)."

    def get_urls(self) -> list[Any]:
        return [
            path(
                "refresh/",
                self.admin_site.admin_view(self.refresh_view),
                name="payouts_currency_refresh",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        extra = {
            **(extra_context or {}),
            "can_refresh": request.user.has_perm("payouts.refresh_currencies"),
        }
        return super().changelist_view(request, extra_context=extra)

    def refresh_view(self, request: HttpRequest) -> HttpResponse:
        """POST only (CSRF-checked by the admin): read ChangeNOW's list now and say what
        changed. A read-only step for money, so no reason or second person is asked for."""
        require_permission(request, "payouts.refresh_currencies")
        if request.method != "POST":
            raise PermissionDenied
        try:
            result = currency_catalogue_refresh(actor=Actor.of_user(request.user))
        except CurrencyError as exc:
            self.message_user(request, str(exc), messages.ERROR)
        else:
            changes = [
                f"{label}: {', '.join(items)}"
                for label, items in (
                    ("added", result.added),
                    ("offered again", result.reactivated),
                    ("no longer offered", result.deactivated),
                )
                if items
            ]
            self.message_user(
                request,
                f"ChangeNOW lists {result.listed} active currencies"
                + (f"; {'; '.join(changes)}" if changes else "; nothing changed"),
                messages.WARNING if result.deactivated else messages.SUCCESS,
            )
        return HttpResponseRedirect(reverse("admin:payouts_currency_changelist"))
