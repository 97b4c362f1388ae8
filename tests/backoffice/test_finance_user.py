"""`manage.py finance_user` (DESIGN.md 12.5): the documented way to create the people of
the three finance roles, with a password shown once and, for approvers, an authenticator."""

from __future__ import annotations

import io
import json
from base64 import b32decode
from urllib.parse import parse_qs, urlparse

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client as HttpClient
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from payouts.models import AuditEvent

pytestmark = pytest.mark.django_db


def finance_user(*args: str) -> dict:
    out = io.StringIO()
    call_command("finance_user", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def code_from_uri(uri: str) -> str:
    """What an authenticator app that scanned `uri` shows now."""
    query = parse_qs(urlparse(uri).query)
    secret = query["secret"][0]
    key = b32decode(secret + "=" * (-len(secret) % 8))
    return f"{TOTP(key, int(query['period'][0]), 0, int(query['digits'][0]), 0).token():06d}"


def sign_in(username: str, password: str, code: str = "") -> HttpClient:
    http = HttpClient()
    http.post(
        "/admin/login/",
        {"username": username, "password": password, "otp_token": code, "next": "/admin/"},
    )
    return http


@pytest.mark.parametrize("role", ["viewer", "operator"])
def test_it_creates_a_viewer_or_operator_with_a_password_and_no_authenticator(role: str) -> None:
    result = finance_user("dana", "--role", role, "--email", "dana@example.com")
    assert set(result) == {"username", "role", "password", "otpauth_uri"}
    assert (result["username"], result["role"], result["otpauth_uri"]) == ("dana", role, None)
    assert len(result["password"]) >= 20
    user = User.objects.get(username="dana")
    assert user.is_staff and user.is_active and not user.is_superuser
    assert user.email == "dana@example.com"
    assert list(user.groups.values_list("name", flat=True)) == [f"finance_{role}"]
    assert user.check_password(result["password"])
    assert not TOTPDevice.objects.filter(user=user).exists()
    assert sign_in("dana", result["password"]).get("/admin/").status_code == 200


def test_it_creates_an_approver_whose_otpauth_uri_signs_in() -> None:
    result = finance_user("ana", "--role", "approver")
    uri = result["otpauth_uri"]
    assert uri.startswith("otpauth://totp/Payout%20back%20office%3Aana?")
    query = parse_qs(urlparse(uri).query)
    assert query["issuer"] == ["Payout back office"] and query["digits"] == ["6"]
    device = TOTPDevice.objects.get(user__username="ana")
    assert device.confirmed  # decided: the first sign-in already needs the code

    without_code = sign_in("ana", result["password"])
    assert "_auth_user_id" not in without_code.session
    with_code = sign_in("ana", result["password"], code_from_uri(uri))
    assert with_code.get("/admin/").status_code == 200


def test_it_resets_the_password_and_authenticator_when_run_again_and_changes_the_role() -> None:
    first = finance_user("ana", "--role", "approver")
    StaticToken.objects.create(
        device=User.objects.get(username="ana").staticdevice_set.create(name="backup codes"),
        token="abcdefgh",
    )
    second = finance_user("ana", "--role", "approver")
    assert second["password"] != first["password"]
    assert second["otpauth_uri"] != first["otpauth_uri"]
    user = User.objects.get(username="ana")
    assert not user.check_password(first["password"])
    assert TOTPDevice.objects.filter(user=user).count() == 1
    assert not StaticToken.objects.filter(device__user=user).exists()

    demoted = finance_user("ana", "--role", "viewer")
    assert demoted["otpauth_uri"] is None
    assert list(user.groups.values_list("name", flat=True)) == ["finance_viewer"]
    kinds = list(
        AuditEvent.objects.filter(object_type="user", object_id="ana")
        .order_by("id")
        .values_list("kind", flat=True)
    )
    assert kinds == ["finance_user_created", "finance_user_updated", "finance_user_updated"]
    event = AuditEvent.objects.filter(object_id="ana").last()
    assert event.actor.startswith("system:manage.py finance_user (OS user ")
    assert first["password"] not in json.dumps(event.data)


def test_it_prints_the_password_once_in_plain_text_output() -> None:
    out = io.StringIO()
    call_command("finance_user", "erin", "--role", "approver", stdout=out)
    text = out.getvalue()
    assert "password (shown once): " in text
    assert "otpauth://totp/" in text


@pytest.mark.parametrize(
    "args",
    [
        ("dana", "--role", "approver", "--email", "not-an-email"),
        ("bad name!", "--role", "viewer"),
    ],
)
def test_it_refuses_invalid_input_and_creates_nobody(args: tuple[str, ...]) -> None:
    with pytest.raises(CommandError):
        call_command("finance_user", *args, stdout=io.StringIO())
    assert not User.objects.exists()


def test_it_refuses_an_unknown_role() -> None:
    with pytest.raises(CommandError):
        call_command("finance_user", "dana", "--role", "admin", stdout=io.StringIO())
