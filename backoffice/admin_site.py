"""The back office's admin site: Django admin with the finance dashboard as its index and
CSV exports wired into every list that declares `export_columns`.

Design: the apps register their ModelAdmins on Django's default `admin.site` (so that
`payouts` and `batches` need not import this project layer); this site adopts every
registration when its URLs are built, and is the one mounted at /admin/.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path

from backoffice.dashboard import dashboard_data
from backoffice.exports import export_csv, export_view


class BackofficeAdminSite(admin.AdminSite):
    site_header = "Payout back office"
    site_title = "Payout back office"
    index_title = "Dashboard"
    enable_nav_sidebar = True

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

    def get_urls(self) -> list[URLPattern]:
        self.adopt(admin.site)
        exports = [
            path(
                f"{model._meta.app_label}/{model._meta.model_name}/export/",
                self.admin_view(export_view(model_admin)),
                name=f"{model._meta.app_label}_{model._meta.model_name}_export",
            )
            for model, model_admin in self._registry.items()
            if getattr(model_admin, "export_columns", ())
        ]
        # Before the model URLs: "<app>/<model>/<object_id>/" would otherwise catch them.
        return [*exports, *super().get_urls()]

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


site = BackofficeAdminSite(name="admin")
