"""Fixtures of the admin tests: logged-in clients per persona and small, known worlds of
money built through the real services (intake, sweep, distribution), so that every figure
the pages show can be checked by hand."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client as HttpClient
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

from batches.models import ConversionBatch
from batches.services import batch_distribute, batch_sweep
from payouts.models import Accumulation, Client
from payouts.services import accumulation_record
from payouts.transitions import Actor, transition
from tests.factories import EIP55_ADDRESS, ClientFactory

SYSTEM = Actor.system("admin-tests")
BTC = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"


def http_as(user: User) -> HttpClient:
    """A test client signed in as `user`; with the user's authenticator, if any, already
    checked for this session (as the login form does when it accepts the code)."""
    http = HttpClient()
    http.force_login(user)
    device = TOTPDevice.objects.filter(user=user, confirmed=True).first()
    if device is not None:
        session = http.session
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
        session.save()
    return http


@pytest.fixture
def admin_client(admin_user: User) -> HttpClient:
    """pytest-django's superuser client, with the authenticator superusers must have."""
    TOTPDevice.objects.create(user=admin_user, name="authenticator", confirmed=True)
    return http_as(admin_user)


@pytest.fixture
def as_viewer(viewer: User) -> HttpClient:
    return http_as(viewer)


@pytest.fixture
def as_operator(operator: User) -> HttpClient:
    return http_as(operator)


@pytest.fixture
def as_approver(approver: User) -> HttpClient:
    return http_as(approver)


@pytest.fixture
def second_approver(db: Any) -> User:
    from tests.personas import persona

    return persona("approver", name="approver-two")


@pytest.fixture
def as_second_approver(second_approver: User) -> HttpClient:
    """Another approver: the second pair of eyes of dual control."""
    return http_as(second_approver)


_counter = {"n": 0}


def credit(client: Client, eth: str = "0.01", usd: str = "30", n: int = 1) -> list[Accumulation]:
    rows = []
    for _ in range(n):
        _counter["n"] += 1
        rows.append(
            accumulation_record(
                client_reference=client.reference,
                payment_id=f"np-{_counter['n']:06d}",
                eth=eth,
                usd=usd,
                order_id=f"{client.reference}:inv-{_counter['n']}",
                actor=SYSTEM,
            ).accumulation
        )
    return rows


def sweep() -> ConversionBatch:
    result = batch_sweep(actor=SYSTEM)
    assert result.created, result
    return ConversionBatch.objects.get(pk=result.batch_id)


def to_converting(batch: ConversionBatch, exchange_id: str = "cnx-admin-0001") -> None:
    transition(
        model=ConversionBatch,
        pk=batch.pk,
        to_state="exchange_created",
        actor=SYSTEM,
        updates={"exchange_id": exchange_id, "payin_address": EIP55_ADDRESS},
    )
    for state in ("funds_sent", "converting"):
        transition(model=ConversionBatch, pk=batch.pk, to_state=state, actor=SYSTEM)


def complete(batch: ConversionBatch, amount: str, exchange_id: str) -> ConversionBatch:
    to_converting(batch, exchange_id)
    batch_distribute(batch_id=batch.pk, amount_to=Decimal(amount), actor=SYSTEM)
    batch.refresh_from_db()
    return batch


@dataclass
class World:
    """Two clients; a completed batch (3 rows, 88.2 USDT received); one pending payment of
    $14.20 against the default $20 threshold."""

    alpha: Client  # threshold $50, paid in BTC
    beta: Client  # instant, paid in USDT on Ethereum
    completed: ConversionBatch
    pending: Accumulation


@pytest.fixture
def world(db: Any) -> World:
    alpha = ClientFactory(
        reference="alpha",
        name="Alpha Books",
        payout_currency="btc",
        payout_network="btc",
        payout_address=BTC,
    )
    beta = ClientFactory(reference="beta", name="Beta Coffee", instant=True)
    credit(alpha, n=2)
    credit(beta)
    completed = complete(sweep(), "88.2", "cnx-completed-01")
    (pending,) = credit(alpha, eth="0.005", usd="14.20")
    return World(alpha=alpha, beta=beta, completed=completed, pending=pending)


def figure(html: str, name: str) -> str:
    """The text of the element marked data-figure="<name>" on a page."""
    match = re.search(rf'data-figure="{re.escape(name)}"[^>]*>\s*(?:<strong>)?([^<]*)', html)
    assert match, f"no figure {name!r} on the page"
    return match.group(1).strip()


def messages_of(response: Any) -> list[str]:
    return [str(m) for m in response.context["messages"]] if response.context else []


# --- browser (Playwright driving Debian's chromium; never a downloaded browser) ----------

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser(django_db_setup: Any) -> Iterator[Any]:
    """One chromium per test module. A missing chromium fails loudly: the browser tests are
    part of `make test`, which installs it (`make browser`).

    While Playwright runs, its sync API keeps an event loop in this thread, so Django's
    guard against ORM calls from async code would refuse the tests' own (synchronous) set-up
    and checks; the guard is lifted for the browser modules only."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"chromium not found at {CHROMIUM}: run `make browser` (apt-get install chromium) "
            "or set CHROMIUM_PATH",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield instance
            instance.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def login(browser: Any, live_server: Any) -> Iterator[Any]:
    """login(user) -> a Playwright page logged in through the admin's login form."""
    from tests.personas import PASSWORD, totp_code_for

    contexts = []

    def _login(user: User) -> Any:
        context = browser.new_context(
            viewport={"width": 1360, "height": 900}, accept_downloads=True
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{live_server.url}/admin/login/")
        page.fill("#id_username", user.get_username())
        page.fill("#id_password", PASSWORD)
        if TOTPDevice.objects.filter(user=user, confirmed=True).exists():
            page.fill("#id_otp_token", totp_code_for(user))
        page.click("input[type=submit]")
        page.wait_for_selector("#pending")
        return page

    yield _login
    for context in contexts:
        context.close()
