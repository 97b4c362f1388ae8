"""Clients: the list, the page with its balances, and the form whose edits go through
`client_validate` and `client_upsert` with the reason on record."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import (
    Count,
    OuterRef,
    QuerySet,
    Subquery,
    Sum,
)
from django.http import HttpRequest
from django.utils.html import format_html

from payouts import approvals
from payouts.admin.shared import (
    audit_details,
    audit_url,
)
from payouts.admin.support import (
    ReadOnlyAdmin,
    admin_url,
    eth,
    fmt_decimal,
    percent,
    plain_initial,
    usd,
    usdt,
)
from payouts.currencies import currency_choices
from payouts.models import (
    ACCUMULATION_STATES,
    Accumulation,
    AuditEvent,
    Client,
    Payout,
)
from payouts.services import (
    DESTINATION_FIELDS,
    ClientInvalid,
    client_upsert,
    client_validate,
)
from payouts.transitions import Actor

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
        # Pick-lists from ChangeNOW's catalogue; the stored value stays selectable (marked)
        # when ChangeNOW no longer lists it, so the page still shows what is on record.
        tickers, networks = currency_choices()
        for name, listed in (("payout_currency", tickers), ("payout_network", networks)):
            if name not in self.fields:
                continue
            choices = list(listed)
            if not choices:
                continue  # catalogue not loaded yet: free text, checked on save
            current = getattr(self.instance, name, "") if self.instance.pk else ""
            if current and current not in {value for value, _label in choices}:
                choices.append((current, f"{current} (no longer offered by ChangeNOW)"))
            self.fields[name].widget = forms.Select(choices=[("", "---------"), *choices])

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
        except ClientInvalid as exc:
            # Every problem on its own field, all at once.
            for name, text in exc.errors.items():
                self.add_error(name if name in self.fields else None, text)
            return data
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        cleaned["active"] = bool(data.get("active"))
        self.validated = cleaned
        return data

    def _post_clean(self) -> None:
        # `client_validate` checked what the table's constraints check, in words; Django's
        # own pass would add the constraint names on top.
        if not self.errors:
            super()._post_clean()


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
        "why_not_paid",
        "active",
    )
    list_filter = ("active", "payout_strategy", "payout_currency", "unpaid_code")
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
        data = dict(form.validated)
        asked: dict[str, Any] = {}
        if change:
            # A new payout destination waits for another approver (dual control); the
            # client's other fields change at once.
            current = Client.objects.get(pk=obj.pk)
            asked = {
                name: data.pop(name)
                for name in DESTINATION_FIELDS
                if name in data and getattr(current, name) != data[name]
            }
        client, _outcome = client_upsert(
            data=data, actor=Actor.of_user(request.user), reason=reason
        )
        if asked:
            try:
                req = approvals.client_destination_request(
                    client=client, changes=asked, reason=reason, user=request.user
                )
            except approvals.ApprovalError as exc:
                self.message_user(request, f"Destination not changed: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Request #{req.pk} waits for another approver (dual control): {req.plan}",
                    messages.WARNING,
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

    @admin.display(description="why not paid", ordering="unpaid_code")
    def why_not_paid(self, obj: Client) -> str:
        return obj.unpaid_reason or "—"

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
            "unpaid_reason": obj.unpaid_reason,
            "unpaid_since": obj.unpaid_since,
            **client_ledger(obj.reference),
        }


LEDGER_LINES = 20


def client_ledger(reference: str) -> dict[str, Any]:
    """The client's ledger accounts (what we owe, per asset) and their latest lines."""
    from ledger.models import Account, Leg
    from ledger.services import balances_get, client_account

    name = client_account(reference)
    accounts = list(Account.objects.filter(name=name))
    lines = list(
        Leg.objects.filter(account__in=accounts)
        .select_related("transaction", "account")
        .order_by("-transaction_id")[:LEDGER_LINES]
    )
    return {
        "ledger_owed": balances_get(names=[name]).get(name, {}),
        "ledger_lines": lines,
        "ledger_accounts": accounts,
    }
