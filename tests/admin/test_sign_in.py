"""Staff sign-in (DESIGN.md 12.5): two-factor for approvers and superusers, enrolment with a
QR code and backup codes, lockout after 5 failures, and what finance sees in the sidebar."""

from __future__ import annotations

import io
import re
from base64 import b32decode
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client as HttpClient
from django.utils import timezone
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from payouts.models import AuditEvent, RuntimeSettings
from payouts.services import runtime_settings_get
from tests.admin.conftest import http_as
from tests.personas import PASSWORD, persona, totp_code_for

pytestmark = pytest.mark.django_db
LOGIN = "/admin/login/"
TWO_FACTOR = "/admin/account/two-factor/"
SWITCH = "/admin/payouts/runtimesettings/switch/payouts_paused/on/"


def sign_in(
    http: HttpClient, username: str, password: str = PASSWORD, code: str = "", **extra: Any
) -> Any:
    return http.post(
        f"{LOGIN}?next=/admin/",
        {"username": username, "password": password, "otp_token": code, "next": "/admin/"},
        **extra,
    )


def code_from_secret(secret_text: str, *, at: float | None = None) -> str:
    """What an authenticator app shows for the key typed from the enrolment page."""
    key = b32decode(secret_text.replace(" ", "") + "=" * (-len(secret_text.replace(" ", "")) % 8))
    totp = TOTP(key, 30, 0, 6, 0)
    if at is not None:
        totp.time = at
    return f"{totp.token():06d}"


@pytest.fixture
def new_approver(db: Any) -> User:
    """An approver who has never enrolled (no device)."""
    user = persona("approver")
    TOTPDevice.objects.filter(user=user).delete()
    return user


# --- the second factor is required -----------------------------------------------------------


def test_it_sends_an_approver_without_a_device_to_enrolment_and_lets_them_do_nothing(
    new_approver: User,
) -> None:
    http = HttpClient()
    response = sign_in(http, new_approver.username)  # the password alone is accepted ...
    assert response.status_code == 302
    dashboard = http.get("/admin/")  # ... but opens nothing but the two-factor page
    assert dashboard.status_code == 302
    assert dashboard["Location"].startswith(f"{TWO_FACTOR}?next=")
    for url in (
        "/admin/batches/conversionbatch/",
        "/admin/payouts/runtimesettings/",
        "/admin/password_change/",
    ):
        assert http.get(url)["Location"].startswith(TWO_FACTOR), url
    # An action with a valid session and CSRF token still does nothing.
    acted = http.post(SWITCH, {"reason": "should be refused"})
    assert acted.status_code == 302 and acted["Location"].startswith(TWO_FACTOR)
    assert runtime_settings_get().payouts_paused is False
    assert not AuditEvent.objects.filter(object_type="runtimesettings").exists()
    # The login page itself sends them on to enrolment rather than offering a new login.
    assert http.get(LOGIN)["Location"].startswith(TWO_FACTOR)

    page = http.get(TWO_FACTOR)
    html = page.content.decode()
    assert page.status_code == 200
    assert '<svg width="' in html and 'class="bo-qr"' in html  # the QR code, inline
    assert 'id="totp-secret"' in html
    assert "payouts" not in [app["app_label"] for app in page.context["available_apps"]]
    assert 'action="/admin/logout/"' in html
    # Logging out stays possible.
    assert http.post("/admin/logout/").status_code == 200
    assert "_auth_user_id" not in http.session


def test_it_enrols_with_a_code_computed_from_the_enrolment_secret_and_the_action_then_succeeds(
    new_approver: User,
) -> None:
    http = HttpClient()
    sign_in(http, new_approver.username)
    html = http.get(TWO_FACTOR).content.decode()
    secret = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', html).group(1)
    device_id = re.search(r'name="device" value="(\d+)"', html).group(1)

    wrong = http.post(TWO_FACTOR, {"step": "confirm", "device": device_id, "otp_token": "000000"})
    assert "does not match" in wrong.content.decode()
    assert not TOTPDevice.objects.filter(user=new_approver, confirmed=True).exists()
    TOTPDevice.objects.filter(pk=device_id).update(throttling_failure_count=0)

    done = http.post(
        TWO_FACTOR,
        {"step": "confirm", "device": device_id, "otp_token": code_from_secret(secret)},
    )
    assert done.status_code == 200
    codes = re.findall(r'<li class="bo-mono">([a-z2-7]{8})</li>', done.content.decode())
    assert len(codes) == 10
    assert StaticToken.objects.filter(device__user=new_approver).count() == 10
    assert AuditEvent.objects.filter(
        object_type="user", object_id=new_approver.username, kind="two_factor_enrolled"
    ).exists()
    # The secret is never shown again once confirmed.
    assert 'id="totp-secret"' not in http.get(TWO_FACTOR).content.decode()

    assert http.get("/admin/").status_code == 200
    acted = http.post(f"{SWITCH}?next=/admin/", {"reason": "signer down, ticket 12"})
    assert acted.status_code == 302 and acted["Location"] == "/admin/"
    assert RuntimeSettings.objects.get().payouts_paused is True

    # The next sign-in asks for the code: without it, or with a wrong one, nothing opens.
    http.post("/admin/logout/")
    for code in ("", "123456"):
        refused = sign_in(http, new_approver.username, code=code)
        assert refused.status_code == 200
        assert "authentication code" in refused.content.decode()
        assert "_auth_user_id" not in http.session
    # django-otp delays the next try after a wrong code (1 s here): skip the wait.
    TOTPDevice.objects.filter(user=new_approver).update(throttling_failure_count=0)
    assert sign_in(http, new_approver.username, code=totp_code_for(new_approver)).status_code == 302
    assert http.get("/admin/").status_code == 200


def test_it_accepts_a_backup_code_once_in_place_of_the_apps_code(approver: User) -> None:
    http = http_as(approver)
    page = http.post(TWO_FACTOR, {"step": "backup_codes"}).content.decode()
    code = re.findall(r'<li class="bo-mono">([a-z2-7]{8})</li>', page)[0]
    http.post("/admin/logout/")

    other = HttpClient()
    assert sign_in(other, approver.username, code=code.upper()).status_code == 302
    assert other.get("/admin/").status_code == 200
    assert StaticToken.objects.filter(device__user=approver).count() == 9
    third = HttpClient()
    assert sign_in(third, approver.username, code=code).status_code == 200  # used up


def test_it_lets_viewers_in_without_a_device_unless_all_staff_must_have_one(
    viewer: User, settings: Any
) -> None:
    http = HttpClient()
    assert sign_in(http, viewer.username).status_code == 302
    assert http.get("/admin/").status_code == 200
    settings.OTP_REQUIRED_FOR_ALL_STAFF = True
    assert http.get("/admin/")["Location"].startswith(TWO_FACTOR)


def test_it_opens_the_admin_at_once_when_the_requirement_is_switched_off(
    new_approver: User, settings: Any
) -> None:
    settings.OTP_REQUIRED = False
    http = HttpClient()
    assert sign_in(http, new_approver.username).status_code == 302
    assert http.get("/admin/").status_code == 200


def test_it_requires_the_second_factor_of_a_superuser_too(admin_user: User) -> None:
    http = HttpClient()
    http.force_login(admin_user)
    assert http.get("/admin/auth/user/")["Location"].startswith(TWO_FACTOR)


# --- lockout ---------------------------------------------------------------------------------


def test_it_locks_the_account_after_5_wrong_passwords_and_refuses_the_right_one_until_unlocked(
    operator: User,
) -> None:
    http = HttpClient()
    answers = [sign_in(http, operator.username, password="wrong").status_code for _ in range(6)]
    assert answers == [200, 200, 200, 200, 429, 429]
    locked = sign_in(http, operator.username)
    assert locked.status_code == 429
    assert "Sign-in locked" in locked.content.decode()
    assert "_auth_user_id" not in http.session
    # Per username and address: the same person from another address is not locked.
    assert sign_in(HttpClient(), operator.username, REMOTE_ADDR="10.9.8.7").status_code == 302

    events = AuditEvent.objects.filter(object_id=operator.username, kind="login_locked_out")
    assert events.count() == 1
    assert events.get().data["ip_address"] == "127.0.0.1"
    assert events.get().data["failures"] == 5

    out = io.StringIO()
    call_command("axes_reset_username", operator.username, stdout=out)
    unlocked = AuditEvent.objects.get(object_id=operator.username, kind="login_unlocked")
    assert unlocked.actor.startswith("system:unlock (OS user ")
    assert sign_in(http, operator.username).status_code == 302
    assert http.get("/admin/").status_code == 200


def test_it_counts_wrong_codes_like_wrong_passwords(approver: User) -> None:
    http = HttpClient()
    for _ in range(5):
        sign_in(http, approver.username, code="999999")
        TOTPDevice.objects.filter(user=approver).update(throttling_failure_count=0)
    assert sign_in(http, approver.username, code=totp_code_for(approver)).status_code == 429


def test_it_ends_a_lockout_after_15_minutes(operator: User) -> None:
    http = HttpClient()
    for _ in range(5):
        sign_in(http, operator.username, password="wrong")
    with time_machine.travel(timezone.now() + timedelta(minutes=14), tick=False):
        assert sign_in(http, operator.username).status_code == 429
    with time_machine.travel(timezone.now() + timedelta(minutes=16), tick=False):
        assert sign_in(http, operator.username).status_code == 302


def test_it_shows_lockouts_to_a_superuser_who_unlocks_them_in_admin_audited(
    operator: User, admin_client: HttpClient, admin_user: User
) -> None:
    http = HttpClient()
    for _ in range(5):
        sign_in(http, operator.username, password="wrong")
    listing = admin_client.get("/admin/axes/accessattempt/?locked_out=yes")
    assert listing.status_code == 200
    assert operator.username in listing.content.decode()
    attempt = AccessAttempt.objects.get(username=operator.username)
    done = admin_client.post(f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"})
    assert done.status_code == 302
    unlocked = AuditEvent.objects.get(object_id=operator.username, kind="login_unlocked")
    assert unlocked.actor == f"user:{admin_user.username}"
    assert sign_in(http, operator.username).status_code == 302


def test_it_hides_the_lockout_list_from_finance_roles(as_approver: HttpClient) -> None:
    assert as_approver.get("/admin/axes/accessattempt/").status_code == 403


# --- what each role sees ---------------------------------------------------------------------

INTERNAL_APPS = {"auth", "django_q", "axes", "otp_totp", "otp_static"}


@pytest.mark.parametrize("role", ["viewer", "operator", "approver"])
def test_it_shows_finance_roles_only_the_back_offices_own_apps(
    role: str, request: pytest.FixtureRequest
) -> None:
    http = request.getfixturevalue(f"as_{role}")
    apps = {app["app_label"] for app in http.get("/admin/").context["available_apps"]}
    assert apps and not apps & INTERNAL_APPS
    assert {"payouts", "batches"} <= apps


def test_it_hides_internal_apps_even_from_a_finance_user_granted_their_permissions(
    approver: User,
) -> None:
    from django.contrib.auth.models import Permission

    approver.user_permissions.add(Permission.objects.get(codename="view_failure"))
    page = http_as(approver).get("/admin/")
    assert "django_q" not in {app["app_label"] for app in page.context["available_apps"]}
    assert http_as(approver).get("/admin/django_q/").status_code == 404


def test_it_shows_a_superuser_everything(admin_client: HttpClient) -> None:
    apps = {app["app_label"] for app in admin_client.get("/admin/").context["available_apps"]}
    assert {"auth", "django_q", "axes", "otp_totp", "payouts"} <= apps
