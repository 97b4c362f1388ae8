"""Shared fixtures: personas (viewer, operator, approver), the system actor, and one
in-process sandbox (ChangeNOW API + JSON-RPC signer over real HTTP) for the session."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from integrations.sandbox import SandboxConfig, SandboxServer
from payouts.transitions import Actor
from tests.personas import persona


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """A test's transaction is rolled back, never committed, so the ledger's deferred balance
    check would never run: fire it at the end of every database test instead."""
    result = yield
    if item.get_closest_marker("django_db") is not None or "db" in getattr(
        item, "fixturenames", ()
    ):
        _fire_deferred_checks()
    return result


def _fire_deferred_checks() -> None:
    from django.db import DatabaseError, IntegrityError, connection

    if connection.connection is None or not connection.in_atomic_block:
        return
    try:
        with connection.cursor() as cur:
            cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
    except IntegrityError:
        raise
    except DatabaseError:
        pass  # the test left its transaction aborted on purpose: nothing was booked


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    """ChangeNOW's ranges are cached per process: no test sees another test's sandbox."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def catalogue(sandbox: SandboxServer, settings: Any, db: Any) -> None:
    """The currency catalogue loaded from the sandbox's list over HTTP, as bootstrap does."""
    from payouts.currencies import currency_catalogue_refresh

    settings.CHANGENOW_API_URL = sandbox.url
    currency_catalogue_refresh(actor=Actor.system("tests"))


@pytest.fixture
def system_actor() -> Actor:
    return Actor.system("tests")


@pytest.fixture
def viewer(db):  # noqa: ANN001, ANN201
    return persona("viewer")


@pytest.fixture
def operator(db):  # noqa: ANN001, ANN201
    return persona("operator")


@pytest.fixture
def approver(db):  # noqa: ANN001, ANN201
    return persona("approver")


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    server = SandboxServer(SandboxConfig()).start()
    yield server
    server.stop()


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> SandboxServer:
    """The session's sandbox with fresh state and default knobs (seeded: reproducible)."""
    app = sandbox_server.app
    with app.lock:
        for f in dataclasses.fields(SandboxConfig):
            setattr(app.config, f.name, getattr(SandboxConfig(seed=7), f.name))
        app.clock_offset = 0.0
        app.reset()
    return sandbox_server


class Control:
    """The sandbox's control endpoints, over HTTP like a person with curl would use them."""

    def __init__(self, server: SandboxServer) -> None:
        self.url = server.url
        self.session = requests.Session()

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.session.post(f"{self.url}{path}", json=body or {}, timeout=5)
        assert response.status_code == 200, response.text
        return response.json()

    def state(self) -> Any:
        response = self.session.get(f"{self.url}/_sandbox/state", timeout=5)
        assert response.status_code == 200, response.text
        return response.json()

    def advance(self, seconds: float) -> None:
        self.post("/_sandbox/clock", {"advance": seconds})

    def config(self, **values: Any) -> Any:
        return self.post("/_sandbox/config", values)

    def fail(self, **rule: Any) -> Any:
        return self.post("/_sandbox/fail", rule)

    def script(self, exchange_id: str, **script: Any) -> Any:
        return self.post(f"/_sandbox/exchanges/{exchange_id}/script", script)

    def exchange(self, exchange_id: str) -> dict[str, Any]:
        return next(e for e in self.state()["exchanges"] if e["id"] == exchange_id)


@pytest.fixture
def control(sandbox: SandboxServer) -> Control:
    return Control(sandbox)


@pytest.fixture
def providers(sandbox: SandboxServer, settings: Any, request: pytest.FixtureRequest) -> Control:
    """Point the application's provider settings at the sandbox; returns its control API.
    In a database test the host wallet's opening balance is booked, as bootstrap does."""
    config = sandbox.app.config
    settings.CHANGENOW_API_URL = sandbox.url
    settings.WALLET_RPC_URL = sandbox.rpc_url
    settings.HOST_WALLET_ADDRESS = config.host_wallet
    settings.USDT_CONTRACT_ADDRESS = config.usdt_contract
    if request.node.get_closest_marker("django_db") is not None or {
        "db",
        "transactional_db",
    } & set(request.fixturenames):
        request.getfixturevalue("db")
        from payouts.currencies import currency_catalogue_refresh
        from payouts.custody import opening_post
        from payouts.engine import wallet

        opening_post(wallet=wallet(), actor=Actor.system("bootstrap"))
        currency_catalogue_refresh(actor=Actor.system("bootstrap"))
    return Control(sandbox)


def nowpayments_pay(eth: Any, *, to: str | None = None) -> str:
    """NOWPayments pays a finished payment's outcome into the host wallet on the sandbox
    chain, as it does before sending the IPN; returns the transaction hash."""
    from django.conf import settings

    body = {"asset": "eth", "amount": str(eth), **({"to": to} if to else {})}
    sandbox_url = settings.WALLET_RPC_URL.removesuffix("/rpc")
    response = requests.post(f"{sandbox_url}/_sandbox/pay", json=body, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["tx_hash"]
