"""The run-time settings page: one row, each change audited with its reason."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme

from payouts import approvals
from payouts.admin.shared import (
    _runtime,
)
from payouts.admin.support import (
    admin_url,
    plain_initial,
    require_permission,
)
from payouts.models import (
    AuditEvent,
    RuntimeSettings,
)
from payouts.services import (
    SETTINGS_EDITABLE,
    runtime_settings_get,
    runtime_settings_update,
)
from payouts.transitions import Actor

PAUSE_SWITCHES: Mapping[str, str] = {
    "conversions_paused": "conversions",
    "payouts_paused": "payouts",
}


class RuntimeSettingsForm(forms.ModelForm):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2, "cols": 60}),
        help_text="Why (recorded with the old and new value of each change).",
    )

    class Meta:
        model = RuntimeSettings
        fields = SETTINGS_EDITABLE

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        plain_initial(self)

    # (field, what it is called on the page, the least it may be, whether that least is allowed)
    LIMITS: ClassVar[tuple[tuple[str, str, int, bool], ...]] = (
        ("conversion_threshold_usd", "The conversion threshold", 0, False),
        ("max_pending_age_minutes", "The maximum pending age", 0, False),
        ("conversion_sweep_interval_seconds", "The conversion sweep interval", 0, False),
        ("payout_sweep_interval_seconds", "The payout sweep interval", 0, False),
        ("advance_interval_seconds", "The advance interval", 0, False),
        ("confirmations", "Confirmations", 0, False),
        ("stuck_broadcast_minutes", "The stuck-broadcast limit", 0, False),
        ("max_fee_per_gas_gwei", "The fee ceiling", 0, False),
        ("direct_payout_min_usdt", "The direct payout minimum", 0, True),
        ("dual_control_over_usdt", "The dual-control limit", 0, True),
    )

    def clean(self) -> dict[str, Any]:
        """Each value checked on its own field, in words (the table's constraints say the
        same, but by name)."""
        data = super().clean()
        for name, label, least, allowed in self.LIMITS:
            value = data.get(name)
            if value is None or name not in self.fields:
                continue
            if value < least or (value == least and not allowed):
                self.add_error(
                    name, f"{label} must be {'at least' if allowed else 'more than'} {least}"
                )
        fee = data.get("platform_fee_percent")
        if fee is not None and not 0 <= fee <= 100:
            self.add_error("platform_fee_percent", "The platform fee must be between 0 and 100 %")
        return data

    def _post_clean(self) -> None:
        if not self.errors:  # the constraint names would only repeat the words above
            super()._post_clean()


@admin.register(RuntimeSettings)
class RuntimeSettingsAdmin(admin.ModelAdmin):
    """One page: the settings row. Saving calls `runtime_settings_update`, which audits each
    changed value (old and new); jobs read the row at their next run."""

    form = RuntimeSettingsForm
    change_form_template = "admin/backoffice/settings_change_form.html"
    fieldsets = (
        ("Conversion", {"fields": ("conversion_threshold_usd", "max_pending_age_minutes")}),
        ("Fees", {"fields": ("platform_fee_percent",)}),
        (
            "Schedules (seconds)",
            {
                "fields": (
                    "conversion_sweep_interval_seconds",
                    "payout_sweep_interval_seconds",
                    "advance_interval_seconds",
                )
            },
        ),
        (
            "Stuck limits (minutes in a state before an order is flagged)",
            {
                "fields": (
                    "stuck_reserved_minutes",
                    "stuck_exchange_created_minutes",
                    "stuck_funds_sent_minutes",
                    "stuck_converting_minutes",
                )
            },
        ),
        # The kill switches are the section above the form (pause at once, resume with a
        # second approver), not checkboxes here as well.
        ("Why", {"fields": ("reason",)}),
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if self.has_change_permission(request, obj):
            return self.fieldsets
        return self.fieldsets[:-1]  # no reason box for a read-only view

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Sequence[str]:
        if not self.has_change_permission(request, obj):
            return SETTINGS_EDITABLE
        # The kill switches are the pause permission's, not every settings editor's.
        if not request.user.has_perm("payouts.pause_jobs"):
            return tuple(PAUSE_SWITCHES)
        return ()

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        row = runtime_settings_get()
        return HttpResponseRedirect(admin_url(RuntimeSettings, "change", row.pk))

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        runtime_settings_get()
        history = list(
            AuditEvent.objects.filter(object_type="runtimesettings").order_by("-id")[:30]
        )
        context = {
            **(extra_context or {}),
            "history": history,
            "timeline_url": f"{admin_url(AuditEvent)}?object_type=runtimesettings",
            "switches": self.switches(request),
            "title": "Run-time settings",
        }
        return super().change_view(request, object_id, form_url, extra_context=context)

    def switches(self, request: HttpRequest) -> list[dict[str, Any]]:
        row = _runtime(request)
        allowed = request.user.has_perm("payouts.pause_jobs")
        return [
            {
                "what": what,
                "paused": getattr(row, name),
                "url": reverse(
                    "admin:payouts_runtimesettings_switch",
                    args=[name, "off" if getattr(row, name) else "on"],
                )
                if allowed
                else "",
            }
            for name, what in PAUSE_SWITCHES.items()
        ]

    def save_model(
        self, request: HttpRequest, obj: RuntimeSettings, form: Any, change: bool
    ) -> None:
        changes = {
            name: form.cleaned_data[name] for name in form.changed_data if name in SETTINGS_EDITABLE
        }
        if any(name in PAUSE_SWITCHES for name in changes):
            require_permission(request, "payouts.pause_jobs")
        reason = form.cleaned_data["reason"]
        asked = approvals.settings_dual_controlled(changes)
        now = {name: value for name, value in changes.items() if name not in asked}
        if now:
            runtime_settings_update(changes=now, actor=Actor.of_user(request.user), reason=reason)
        if asked:
            try:
                req = approvals.settings_change_request(
                    changes=asked, reason=reason, user=request.user
                )
            except approvals.ApprovalError as exc:
                self.message_user(request, f"Not asked: {exc}", messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Request #{req.pk} waits for another approver (dual control): {req.plan}",
                    messages.WARNING,
                )
        obj.refresh_from_db()

    def get_urls(self) -> list[Any]:
        return [
            path(
                "switch/<str:name>/<str:to>/",
                self.admin_site.admin_view(self.switch_view),
                name="payouts_runtimesettings_switch",
            ),
            *super().get_urls(),
        ]

    def switch_view(self, request: HttpRequest, name: str, to: str) -> HttpResponse:
        """Pause or resume conversions or payouts: a confirmation page, then
        `runtime_settings_update` with the reason (audited, effective at the next run)."""
        require_permission(request, "payouts.pause_jobs")
        if name not in PAUSE_SWITCHES or to not in ("on", "off"):
            raise PermissionDenied
        paused = to == "on"
        what = PAUSE_SWITCHES[name]
        errors: list[str] = []
        reason = (request.POST.get("reason") or "").strip()
        if request.method == "POST":
            if not reason:
                errors.append("A reason is required: it is recorded in the audit trail.")
            elif paused:
                runtime_settings_update(
                    changes={name: paused}, actor=Actor.of_user(request.user), reason=reason
                )
                self.message_user(
                    request, f"{what.capitalize()} paused (audited).", messages.SUCCESS
                )
            else:
                # Resuming moves money again: another approver decides it.
                try:
                    req = approvals.settings_change_request(
                        changes={name: False}, reason=reason, user=request.user
                    )
                except approvals.ApprovalError as exc:
                    self.message_user(request, f"Not asked: {exc}", messages.ERROR)
                else:
                    self.message_user(
                        request,
                        f"Resuming {what} is request #{req.pk}: it waits for another approver.",
                        messages.WARNING,
                    )
            if not errors:
                # Only back into this site: a crafted link must not bounce to another host.
                target = request.GET.get("next") or ""
                if not url_has_allowed_host_and_scheme(
                    target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
                ):
                    target = reverse("admin:index")
                return HttpResponseRedirect(target)
        effect = (
            f"The {'conversion' if what == 'conversions' else 'payout'} sweep will do nothing "
            "from its next run until resumed; orders already under way continue."
            if paused
            else f"Asks to resume: once another approver approves it, the "
            f"{'conversion' if what == 'conversions' else 'payout'} sweep runs again from its "
            "next run."
        )
        context = {
            **self.admin_site.each_context(request),
            "title": f"{'Pause' if paused else 'Resume'} {what}: are you sure?",
            "opts": RuntimeSettings._meta,
            "effect": effect,
            "currently": "paused" if getattr(_runtime(request), name) else "running",
            "reason": reason,
            "errors": errors,
            "verb": f"{'Pause' if paused else 'Resume'} {what}",
            "danger": paused,
            "cancel_url": reverse("admin:index"),
        }
        return TemplateResponse(request, "admin/backoffice/confirm_switch.html", context)
