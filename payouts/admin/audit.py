"""The audit trail's list, filterable by object, kind and actor."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from django.contrib import admin
from django.db.models import (
    Q,
    QuerySet,
)
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from payouts.admin.shared import (
    DATE_FILTER,
)
from payouts.admin.support import (
    InputFilter,
    ReadOnlyAdmin,
    datetime_column,
    short_id,
)
from payouts.models import (
    AuditEvent,
)

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
