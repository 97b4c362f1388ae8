"""The back office's admin site: Django admin with the finance dashboard as its index and
CSV exports wired into every list that declares `export_columns`.

Design: the apps register their ModelAdmins on Django's default `admin.site` (so that
`payouts` and `batches` need not import this project layer); this site adopts every
registration when its URLs are built, and is the one mounted at /admin/.

Sign-in: username, password and the authenticator code in one form (`auth_forms`). A
person who must have a second factor (`services_auth.second_factor_required`) and whose
session has not passed it is sent to their two-factor page from every admin view; only
enrolment and logout stay open to them. Finance roles see only the back office's own apps.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import update_wrapper
from typing import Any
from urllib.parse import urlencode

from axes.admin import AccessAttemptAdmin
from axes.models import AccessAttempt
from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect

from backoffice.auth_forms import BackofficeAuthenticationForm
from backoffice.auth_views import two_factor_view
from backoffice.dashboard import dashboard_data
from backoffice.exports import export_csv, export_view
from backoffice.services_auth import second_factor_pending, unlocking_by
from payouts.transitions import Actor

# Apps only superusers see in the index and sidebar: accounts, Django-Q's task tables and the
# sign-in machinery are not what finance works with.
SUPERUSER_ONLY_APPS = frozenset({"auth", "django_q", "otp_totp", "otp_static", "axes"})


class BackofficeAdminSite(admin.AdminSite):
    site_header = "Payout back office"
    site_title = "Payout back office"
    index_title = "Dashboard"
    enable_nav_sidebar = True
    login_form = BackofficeAuthenticationForm
    login_template = "admin/backoffice/login.html"

    def __init__(self, name: str = "admin") -> None:
        super().__init__(name=name)
        self.add_action(export_csv, "export_csv")
        # Available only to lists that name it (and whose users may export).
        self.disable_action("export_csv")

    def adopt(self, source: admin.AdminSite) -> None:
        """Register here every model registered on `source`, with the same ModelAdmin."""
        for model, model_admin in source._registry.items():
            if not self.is_registered(model):
                self.register(model, type(model_admin))

    def has_permission(self, request: HttpRequest) -> bool:
        return super().has_permission(request) and not second_factor_pending(request.user)

    def admin_view(self, view: Callable[..., HttpResponse], cacheable: bool = False) -> Any:
        """Django's wrapper, preceded by the second-factor gate: a session that still owes
        its second factor is sent to the two-factor page (logging out stays possible)."""
        checked = super().admin_view(view, cacheable)
        is_logout = view == self.logout

        def gate(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if second_factor_pending(request.user):
                if is_logout:
                    return view(request, *args, **kwargs)
                return self.two_factor_redirect(request)
            return checked(request, *args, **kwargs)

        return update_wrapper(csrf_protect(never_cache(gate)), view)

    def two_factor_redirect(self, request: HttpRequest) -> HttpResponseRedirect:
        target = reverse("admin:two_factor", current_app=self.name)
        return HttpResponseRedirect(f"{target}?{urlencode({'next': request.get_full_path()})}")

    def login(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        if request.method == "GET" and second_factor_pending(request.user):
            # Password already given: what is missing is the second factor, not a login.
            return self.two_factor_redirect(request)
        return super().login(request, extra_context)

    def two_factor(self, request: HttpRequest) -> HttpResponse:
        return two_factor_view(request, self)

    def _build_app_dict(self, request: HttpRequest, label: str | None = None) -> Any:
        # The one place Django builds both the sidebar/index app list and an app's page.
        app_dict = super()._build_app_dict(request, label)
        if request.user.is_superuser:
            return app_dict
        return {key: app for key, app in app_dict.items() if key not in SUPERUSER_ONLY_APPS}

    def get_urls(self) -> list[URLPattern]:
        self.adopt(admin.site)
        account = [
            # Not behind admin_view: it must open before the second factor is done.
            path(
                "account/two-factor/",
                csrf_protect(never_cache(self.two_factor)),
                name="two_factor",
            ),
        ]
        exports = [
            path(
                f"{model._meta.app_label}/{model._meta.model_name}/export/",
                self.admin_view(export_view(model_admin)),
                name=f"{model._meta.app_label}_{model._meta.model_name}_export",
            )
            for model, model_admin in self._registry.items()
            if getattr(model_admin, "export_columns", ())
        ]
        reports = [path("reports/", self.admin_view(self.reports), name="reports")]
        # Before the model URLs: "<app>/<model>/<object_id>/" would otherwise catch them.
        return [*account, *exports, *reports, *super().get_urls()]

    def reports(self, request: HttpRequest) -> HttpResponse:
        from backoffice.reports_view import reports_view

        return reports_view(request, self)

    def index(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The dashboard. Server-rendered, no external assets."""
        context = {
            **self.each_context(request),
            "title": self.index_title,
            "subtitle": None,
            "dash": dashboard_data(),
            "can_pause": request.user.has_perm("payouts.pause_jobs"),
            **(extra_context or {}),
        }
        request.current_app = self.name
        return TemplateResponse(request, "admin/dashboard.html", context)


class AuditedAccessAttemptAdmin(AccessAttemptAdmin):
    """django-axes' list of failed sign-ins (superusers): deleting a locked-out row unlocks
    that username and address, and the unlock is audited with the person who did it."""

    def delete_model(self, request: HttpRequest, obj: AccessAttempt) -> None:
        with unlocking_by(Actor.of_user(request.user)):
            super().delete_model(request, obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[AccessAttempt]) -> None:
        with unlocking_by(Actor.of_user(request.user)):
            super().delete_queryset(request, queryset)


site = BackofficeAdminSite(name="admin")
# Registered before `adopt` runs, so that this subclass replaces axes' own registration.
site.register(AccessAttempt, AuditedAccessAttemptAdmin)
