"""Headers and redirects of the admin (DESIGN.md 12.5): a strict Content-Security-Policy
that our pages live within, and redirects that never leave the site."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client as HttpClient

from payouts.models import RuntimeSettings
from tests.admin.conftest import World

pytestmark = pytest.mark.django_db
SWITCH = "/admin/payouts/runtimesettings/switch/payouts_paused/on/"


def policy(response: Any) -> dict[str, str]:
    header = response["Content-Security-Policy"]
    return {
        part.split(" ", 1)[0]: part.split(" ", 1)[1] if " " in part else ""
        for part in (p.strip() for p in header.split(";"))
        if part
    }


def test_it_answers_the_admin_with_a_strict_csp_header(as_viewer: HttpClient) -> None:
    for response in (HttpClient().get("/admin/login/"), as_viewer.get("/admin/")):
        assert response.status_code == 200
        directives = policy(response)
        assert directives["default-src"] == "'self'"
        assert directives["script-src"] == "'self'"
        assert directives["style-src"] == "'self'"
        assert directives["frame-ancestors"] == "'none'"
        assert "unsafe-inline" not in response["Content-Security-Policy"]


INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.I)
INLINE_STYLE = re.compile(r"<style\b|\sstyle=|\son[a-z]+=\"", re.I)


def test_it_renders_our_pages_without_anything_the_policy_forbids(
    world: World, as_approver: HttpClient, approver: Any
) -> None:
    pages = [
        "/admin/",
        f"/admin/batches/conversionbatch/{world.completed.pk}/change/",
        f"/admin/payouts/client/{world.alpha.pk}/change/",
        "/admin/payouts/accumulation/?state__exact=pending",
        f"/admin/payouts/runtimesettings/{RuntimeSettings.objects.get().pk}/change/",
        SWITCH,
        "/admin/account/two-factor/",
    ]
    anonymous = HttpClient()
    for client, url in [(anonymous, "/admin/login/"), *((as_approver, url) for url in pages)]:
        response = client.get(url)
        assert response.status_code == 200, url
        html = response.content.decode()
        assert not INLINE_SCRIPT.search(html), (url, INLINE_SCRIPT.search(html))
        assert not INLINE_STYLE.search(html), (url, INLINE_STYLE.search(html))
    # The styles moved to this site's own static files.
    assert "/static/backoffice/admin.css" in as_approver.get("/admin/").content.decode()
    assert "/static/backoffice/dashboard.css" in as_approver.get("/admin/").content.decode()


@pytest.mark.parametrize(
    ("next_url", "lands_on"),
    [
        ("https://evil.example/", "/admin/"),
        ("//evil.example/path", "/admin/"),
        ("javascript:alert(1)", "/admin/"),
        ("/admin/payouts/runtimesettings/", "/admin/payouts/runtimesettings/"),
    ],
)
def test_it_redirects_the_switch_view_only_inside_the_site(
    next_url: str, lands_on: str, as_approver: HttpClient
) -> None:
    response = as_approver.post(
        f"{SWITCH}?{urlencode({'next': next_url})}", {"reason": "incident 7"}
    )
    assert response.status_code == 302
    assert response["Location"] == lands_on
    assert RuntimeSettings.objects.get().payouts_paused is True


def test_it_redirects_the_two_factor_page_only_inside_the_site(approver: Any) -> None:
    from tests.personas import totp_code_for

    http = HttpClient()
    http.force_login(approver)  # password done, second factor outstanding
    response = http.post(
        "/admin/account/two-factor/?next=https://evil.example/",
        {"step": "verify", "otp_token": totp_code_for(approver)},
    )
    assert response.status_code == 302
    assert response["Location"] == "/admin/"
