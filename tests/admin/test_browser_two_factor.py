"""Two-factor enrolment and sign-in in a real browser (Debian's chromium driven by
Playwright) against a live server, under the site's Content-Security-Policy."""

from __future__ import annotations

from base64 import b32decode
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from payouts.models import RuntimeSettings
from tests.personas import PASSWORD, persona, totp_code_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def app_code(secret_text: str) -> str:
    """What an authenticator app shows now for the key typed from the page."""
    secret = secret_text.replace(" ", "")
    key = b32decode(secret + "=" * (-len(secret) % 8))
    return f"{TOTP(key, 30, 0, 6, 0).token():06d}"


@pytest.fixture
def page(browser: Any, live_server: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.csp_violations = []
    page.on(
        "console",
        lambda message: (
            page.csp_violations.append(message.text)
            if "Content Security Policy" in message.text
            else None
        ),
    )
    page.base = live_server.url
    yield page
    context.close()


def sign_in(page: Any, username: str, code: str = "") -> None:
    page.goto(f"{page.base}/admin/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    if code:
        page.fill("#id_otp_token", code)
    page.click("input[type=submit]")


def test_it_enrols_an_approver_with_the_qr_page_and_then_signs_in_with_the_code(
    page: Any,
) -> None:
    user: User = persona("approver")
    TOTPDevice.objects.filter(user=user).delete()  # never enrolled

    sign_in(page, user.username)
    page.wait_for_selector("#enrol")
    assert "/admin/account/two-factor/" in page.url
    assert page.locator("#nav-sidebar").count() == 0  # nothing else is open yet
    qr = page.locator(".bo-qr-box svg.bo-qr")
    assert qr.is_visible() and qr.bounding_box()["width"] > 100
    # Going round the page does not help: the admin sends the person back.
    page.goto(f"{page.base}/admin/payouts/runtimesettings/")
    page.wait_for_selector("#enrol")

    page.fill("#id_confirm_token", app_code(page.inner_text("#totp-secret")))
    page.click("#confirm-enrolment")
    page.wait_for_selector("#backup-codes")
    assert page.locator("#backup-codes li").count() == 10
    page.click("#continue")  # on to the page first asked for
    page.wait_for_selector("#switches")
    assert "/admin/payouts/runtimesettings/" in page.url
    page.goto(f"{page.base}/admin/")
    page.wait_for_selector("#pending")
    # The dashboard's styles come from the static file the policy allows.
    assert page.eval_on_selector(".dash", "e => getComputedStyle(e).display") == "grid"

    # An action an approver may take now works: pause payouts with a reason.
    page.click('#pending a.bo-button >> text="Pause…" >> nth=1')
    page.fill("#id_reason", "signer maintenance, ticket 88")
    page.click("#confirm-switch")
    page.wait_for_selector(".messagelist")
    assert RuntimeSettings.objects.get().payouts_paused is True

    page.click("#logout-form button")
    page.wait_for_selector("text=Logged out")
    sign_in(page, user.username, code="000000")
    page.wait_for_selector(".errornote")
    assert "authentication code" in page.inner_text(".errornote")
    # django-otp delays the next try after a wrong code by a second: do not wait for it.
    TOTPDevice.objects.filter(user=user).update(throttling_failure_count=0)
    sign_in(page, user.username, code=totp_code_for(user))
    page.wait_for_selector("#pending")
    assert page.csp_violations == []
