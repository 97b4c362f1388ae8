"""The person's own two-factor page (/admin/account/two-factor/): enrol an authenticator
with a QR code, verify a session, see and renew one-time backup codes.

Reachable by every signed-in staff user, also before their second factor is done (it is
where the admin sends them); the logic is in `backoffice.services_auth`.
"""

from __future__ import annotations

from typing import Any

import django_otp
from django.contrib import messages
from django.contrib.admin import AdminSite
from django.contrib.auth.signals import user_login_failed
from django.contrib.auth.views import redirect_to_login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.safestring import mark_safe
from django_otp.plugins.otp_totp.models import TOTPDevice

from backoffice.services_auth import (
    BACKUP_CODE_COUNT,
    SecondFactorError,
    backup_codes_left,
    backup_codes_regenerate,
    is_verified,
    qr_svg,
    safe_next_url,
    second_factor_check,
    second_factor_pending,
    second_factor_required,
    totp_enrolment_confirm,
    totp_pending_device,
    totp_secret_text,
)

TEMPLATE = "admin/backoffice/two_factor.html"


def two_factor_view(request: HttpRequest, site: AdminSite) -> HttpResponse:
    user = request.user
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return redirect_to_login(request.get_full_path(), reverse("admin:login"))
    index = reverse("admin:index", current_app=site.name)
    next_url = safe_next_url(request, request.POST.get("next") or request.GET.get("next"), index)
    errors: list[str] = []
    backup_codes: list[str] = []
    confirmed = TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk").first()
    verified = is_verified(user)
    step = request.POST.get("step", "") if request.method == "POST" else ""

    if step == "confirm":
        try:
            device_id = int(request.POST.get("device", ""))
            enrolment = totp_enrolment_confirm(
                user=user, device_id=device_id, token=request.POST.get("otp_token", "")
            )
        except (SecondFactorError, ValueError) as exc:
            errors.append(str(exc) if isinstance(exc, SecondFactorError) else "Reload the page.")
        else:
            # A new privilege for this session: a new session id too.
            request.session.cycle_key()
            django_otp.login(request, enrolment.device)
            backup_codes = enrolment.backup_codes
            confirmed, verified = enrolment.device, True
    elif step == "verify":
        try:
            device = second_factor_check(user=user, token=request.POST.get("otp_token", ""))
        except SecondFactorError as exc:
            user_login_failed.send(
                sender=__name__, credentials={"username": user.get_username()}, request=request
            )
            errors.append(str(exc))
        else:
            request.session.cycle_key()
            django_otp.login(request, device)
            messages.success(request, "Two-factor check passed.")
            return HttpResponseRedirect(next_url)
    elif step == "backup_codes" and verified:
        backup_codes = backup_codes_regenerate(user=user)
    elif step == "replace" and verified:
        totp_pending_device(user=user)
        return HttpResponseRedirect(request.path)

    # Enrolment is offered to whoever has no authenticator, and to a verified session that
    # asked to replace its own; a confirmed device's secret is never shown again.
    pending = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
    enrol = None
    if confirmed is None or (verified and pending is not None):
        device = pending or totp_pending_device(user=user)
        uri = device.config_url
        enrol = {
            "device_id": device.pk,
            # Our own generated SVG markup (segno), not user input.
            "qr": mark_safe(qr_svg(uri)),  # noqa: S308
            "secret": totp_secret_text(device),
            "replacing": confirmed is not None,
        }
    pending_check = second_factor_pending(user)
    context: dict[str, Any] = {
        **site.each_context(request),
        "title": "Two-factor sign-in",
        "subtitle": None,
        "required": second_factor_required(user),
        "pending": pending_check,
        "verified": verified,
        "confirmed": confirmed,
        "enrol": enrol,
        "ask_code": confirmed is not None and not verified,
        "backup_codes": backup_codes,
        "backup_left": backup_codes_left(user),
        "backup_count": BACKUP_CODE_COUNT,
        "errors": errors,
        "next": next_url,
    }
    if pending_check:
        # Nothing else of the admin is open yet: no sidebar, no app list.
        context.update(available_apps=[], is_nav_sidebar_enabled=False, has_permission=False)
    request.current_app = site.name
    return TemplateResponse(request, TEMPLATE, context)
