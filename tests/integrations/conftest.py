"""Fixtures for the provider layer: one in-process sandbox on a free port for the session,
reset before every test, and clients pointed at it over real HTTP."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from integrations.changenow.client import ChangeNowClient
from integrations.http import RetryPolicy
from integrations.sandbox import SandboxConfig, SandboxServer
from integrations.wallet.client import WalletClient

# Tests never sleep through backoff; retry behaviour itself is tested with explicit policies.
NO_WAIT = RetryPolicy(retries=3, backoff_factor=0, backoff_jitter=0)


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
def changenow(sandbox: SandboxServer) -> ChangeNowClient:
    return ChangeNowClient(sandbox.url, "test-key", timeout=(2, 5), retry=NO_WAIT)


@pytest.fixture
def wallet(sandbox: SandboxServer) -> WalletClient:
    config = sandbox.app.config
    return WalletClient(
        sandbox.rpc_url,
        host_address=config.host_wallet,
        usdt_contract=config.usdt_contract,
        timeout=(2, 5),
    )
