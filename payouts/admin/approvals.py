"""Approval requests (dual control): the list of what waits for a second person, and the
approve / reject actions only another approver may take."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from payouts import approvals
from payouts.admin.support import (
    ActionSpec,
    ReadOnlyAdmin,
    admin_url,
    confirmed_action,
    datetime_column,
    state_badge,
)
from payouts.models import ApprovalRequest

DECISIONS: Mapping[str, ActionSpec] = {
    "approve_requests": ActionSpec(
        name="approve_requests",
        verb="Approve and run",
        permission=approvals.APPROVE_PERMISSION,
        needs_reason=True,
        danger=True,
        summary=(
            "Runs each request's action now, as you, after checking it again (the order may "
            "have moved on since it was asked: then the request ends failed, with the "
            "reason). Nobody approves their own request."
        ),
    ),
    "reject_requests": ActionSpec(
        name="reject_requests",
        verb="Reject",
        permission=approvals.APPROVE_PERMISSION,
        needs_reason=True,
        summary="Ends each request without running it; nothing changes.",
    ),
}
TARGET_PAGES = {
    "batch": ("batches", "conversionbatch"),
    "payout": ("payouts", "payout"),
    "settings": ("payouts", "runtimesettings"),
    "client": ("payouts", "client"),
}


@admin.register(ApprovalRequest)
class ApprovalRequestAdmin(ReadOnlyAdmin):
    list_display = ("id", "asked", "action", "target", "requested_actor", "status", "decided_by")
    list_filter = ("state", "action")
    list_select_related = ("decided_by",)
    asked = datetime_column("created_at", "asked")
    actions: ClassVar[Sequence[str]] = [*DECISIONS]
    action_permissions: ClassVar[Mapping[str, str]] = {
        name: spec.permission for name, spec in DECISIONS.items()
    }

    @admin.display(description="order")
    def target(self, obj: ApprovalRequest) -> Any:
        from django.apps import apps
        from django.utils.html import format_html

        app, model = TARGET_PAGES[obj.target_kind]
        url = admin_url(apps.get_model(app, model), "change", obj.target_id)
        return format_html('<a href="{}">{} {}</a>', url, obj.target_kind, obj.target_id[:8])

    @admin.display(description="state", ordering="state")
    def status(self, obj: ApprovalRequest) -> Any:
        return state_badge(obj.state)

    def describe(self, obj: ApprovalRequest) -> dict[str, Any]:
        return {
            "label": f"request #{obj.pk}",
            "url": admin_url(obj, "change", obj.pk),
            "facts": [
                ("action", obj.get_action_display()),
                ("order", self.target(obj)),
                ("asked by", obj.requested_actor),
                ("why", obj.reason),
                ("expires", obj.expires_at.strftime("%Y-%m-%d %H:%M UTC")),
            ],
            "effect": obj.plan,
            "warning": ""
            if obj.requested_by_id != getattr(self, "_user_id", None)
            else "You asked for this: another approver must decide it.",
        }

    def _decide(self, request: HttpRequest, queryset: QuerySet, name: str) -> HttpResponse | None:
        # A forged POST by the person who asked: refused before anything is read or changed.
        if queryset.filter(requested_by=request.user).exists():
            raise PermissionDenied
        self._user_id = request.user.pk

        def execute(obj: ApprovalRequest, reason: str, _options: Any) -> tuple[bool, str]:
            if name == "approve_requests":
                done = approvals.approval_approve(
                    request_id=obj.pk, user=request.user, reason=reason
                )
            else:
                done = approvals.approval_reject(
                    request_id=obj.pk, user=request.user, reason=reason
                )
            return done.state in ("executed", "rejected"), f"{done.state}: {done.result or reason}"

        return confirmed_action(
            self,
            request,
            queryset,
            spec=DECISIONS[name],
            describe=self.describe,
            execute=execute,
            refusals=(approvals.ApprovalError,),
        )

    @admin.action(description="Approve and run the selected requests")
    def approve_requests(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._decide(request, queryset, "approve_requests")

    @admin.action(description="Reject the selected requests")
    def reject_requests(self, request: HttpRequest, queryset: QuerySet) -> HttpResponse | None:
        return self._decide(request, queryset, "reject_requests")
