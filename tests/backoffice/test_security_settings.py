"""Deny-by-default API permissions, webhooks that open themselves, and the proxy header only
where the environment declares a proxy (DESIGN.md 12.5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from backoffice.webhooks import ChangeNowWebhookView, NowPaymentsWebhookView

ROOT = Path(__file__).resolve().parents[2]


class ForgotItsPermission(APIView):
    def get(self, request: object) -> Response:
        return Response({"secret": "money"})


def test_it_denies_an_api_view_that_declares_no_permission() -> None:
    response = ForgotItsPermission.as_view()(APIRequestFactory().get("/x"))
    assert response.status_code == 403
    assert "secret" not in response.data


def test_it_opens_each_webhook_view_explicitly() -> None:
    for view in (NowPaymentsWebhookView, ChangeNowWebhookView):
        assert "permission_classes" in vars(view), view
        assert view.permission_classes == [AllowAny]


@pytest.mark.django_db
def test_it_still_refuses_an_unsigned_webhook_by_its_own_check(client) -> None:  # noqa: ANN001
    response = client.post("/webhooks/nowpayments/", b"{}", content_type="application/json")
    assert response.status_code == 401


def production_setting(name: str, **env: str) -> str:
    """repr() of one setting as `backoffice.settings` computes it with DEBUG off."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DEBUG", "BEHIND_"))}
    base.update(
        DJANGO_SETTINGS_MODULE="backoffice.settings",
        DEBUG="false",
        SECRET_KEY="x7Qp-" + "k9Lm2Vn8Rt4Wy6Zb1Hc3Jd5Fg7Ks0Pq" * 2,
        ALLOWED_HOSTS="backoffice.example.com",
        **env,
    )
    code = (
        "import django; django.setup(); from django.conf import settings; "
        f"print(repr(getattr(settings, {name!r}, None)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_it_trusts_x_forwarded_proto_only_behind_a_declared_proxy() -> None:
    assert production_setting("SECURE_PROXY_SSL_HEADER") == "None"
    assert production_setting("SECURE_PROXY_SSL_HEADER", BEHIND_HTTPS_PROXY="true") == repr(
        ("HTTP_X_FORWARDED_PROTO", "https")
    )


def test_it_requires_the_second_factor_unless_the_environment_says_otherwise() -> None:
    assert production_setting("OTP_REQUIRED") == "True"
    assert production_setting("OTP_REQUIRED", OTP_REQUIRED="false") == "False"


def test_it_switches_two_factor_off_for_the_demo() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_script", ROOT / "scripts" / "run.py")
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    saved = os.environ.pop("OTP_REQUIRED", None)
    try:
        assert run.demo_environment()["OTP_REQUIRED"] == "false"
    finally:
        if saved is not None:
            os.environ["OTP_REQUIRED"] = saved
