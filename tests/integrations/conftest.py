"""Fixtures for the provider layer: one in-process sandbox on a free port for the session,
reset before every test, and clients pointed at it over real HTTP."""

from __future__ import annotations

import pytest

from integrations.changenow.client import ChangeNowClient
from integrations.http import RetryPolicy
from integrations.sandbox import SandboxServer
from integrations.wallet.client import WalletClient

# Tests never sleep through backoff; retry behaviour itself is tested with explicit policies.
NO_WAIT = RetryPolicy(retries=3, backoff_factor=0, backoff_jitter=0)


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
