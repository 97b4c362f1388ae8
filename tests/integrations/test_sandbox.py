"""The sandbox itself: knobs, control endpoints, deposit matching, and `manage.py sandbox`
as the subprocess the end-to-end tests will run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import requests

from integrations.changenow.client import ChangeNowClient
from integrations.changenow.types import CreatedExchange
from integrations.errors import ChangeNowError
from integrations.http import RetryPolicy
from integrations.sandbox import SandboxConfig, SandboxServer
from integrations.wallet.client import WalletClient
from tests.conftest import Control

ROOT = Path(__file__).resolve().parents[2]
ONE_TRY = RetryPolicy(retries=0)


def _create(
    changenow: ChangeNowClient, currency: str = "eth", amount: str = "0.1", **extra: object
) -> CreatedExchange:
    return changenow.create_exchange(
        from_currency=currency,
        to_currency="btc",
        from_network="eth",
        to_network="btc",
        from_amount=Decimal(amount),
        address="1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa",
        **extra,  # type: ignore[arg-type]
    )


def test_config_reads_sandbox_environment_variables() -> None:
    config = SandboxConfig.from_env(
        {
            "SANDBOX_ERROR_RATE": "0.25",
            "SANDBOX_STEP_SECONDS": "0.5",
            "SANDBOX_MIN_AMOUNTS": "eth=0.02, usdt=15",
            "SANDBOX_USDT_BALANCE": "123.456789",
            "SANDBOX_SEED": "42",
            "SANDBOX_SIGN_FORMAT": "geth",
        },
        host_wallet="0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    )
    assert config.error_rate == 0.25 and config.step_seconds == 0.5
    assert config.min_amounts == {"eth": Decimal("0.02"), "usdt": Decimal("15")}
    assert config.usdt_balance == Decimal("123.456789") and config.seed == 42
    assert config.sign_format == "geth"
    assert config.host_wallet == "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def test_config_refuses_unknown_or_out_of_range_knobs() -> None:
    config = SandboxConfig()
    with pytest.raises(ValueError, match="unknown sandbox setting"):
        config.update({"latency": 5})
    with pytest.raises(ValueError, match="between 0 and 1"):
        config.update({"error_rate": 2})
    with pytest.raises(ValueError, match="sign_format"):
        config.update({"sign_format": "pkcs"})


def test_control_endpoints_update_config_and_answer_errors(
    sandbox: SandboxServer, control: Control
) -> None:
    assert control.config(latency_ms=5, min_amounts={"eth": "0.5"})["latency_ms"] == 5
    assert sandbox.app.config.min_amounts["eth"] == Decimal("0.5")
    bad = requests.post(f"{sandbox.url}/_sandbox/config", json={"nope": 1}, timeout=5)
    assert bad.status_code == 400 and bad.json()["error"] == "not_valid_params"
    assert requests.get(f"{sandbox.url}/_sandbox/nothing", timeout=5).status_code == 404
    assert requests.get(f"{sandbox.url}/v3/whatever", timeout=5).status_code == 404
    missing = requests.post(
        f"{sandbox.url}/_sandbox/exchanges/nope/script", json={"outcome": "failed"}, timeout=5
    )
    assert missing.status_code == 404


def test_scripts_are_validated(
    changenow: ChangeNowClient, control: Control, sandbox: SandboxServer
) -> None:
    exchange_id = _create(changenow).id
    for script in (
        {"outcome": "exploded"},
        {"outcome": "stuck", "status": "finished"},
        {"outcome": "unknown", "status": "finished"},
    ):
        response = requests.post(
            f"{sandbox.url}/_sandbox/exchanges/{exchange_id}/script", json=script, timeout=5
        )
        assert response.status_code == 400, script


def test_random_error_and_rate_limit_knobs(sandbox: SandboxServer, control: Control) -> None:
    client = ChangeNowClient(sandbox.url, "k", retry=ONE_TRY)
    control.config(error_rate=1)
    with pytest.raises(ChangeNowError) as caught:
        client.get_currencies()
    assert caught.value.code == "server_error"
    control.config(error_rate=0, rate_limit_rate=1, retry_after=9)
    with pytest.raises(ChangeNowError) as caught:
        client.get_currencies()
    assert caught.value.code == "rate_limited" and caught.value.retry_after == 9
    control.config(rate_limit_rate=0.5)
    outcomes = []
    for _ in range(40):
        try:
            client.get_min_amount("eth", "btc")
            outcomes.append("ok")
        except ChangeNowError as exc:
            outcomes.append(exc.code)
    assert 5 < outcomes.count("rate_limited") < 35 and "ok" in outcomes


def test_latency_knob_slows_answers(
    sandbox: SandboxServer, control: Control, changenow: ChangeNowClient
) -> None:
    control.config(latency_ms=150)
    started = time.monotonic()
    changenow.get_currencies()
    assert time.monotonic() - started >= 0.15


def test_a_failed_create_whose_work_was_done_still_creates(
    changenow: ChangeNowClient, control: Control
) -> None:
    control.fail(path="/v2/exchange", method="POST", status=504, process=True)
    with pytest.raises(ChangeNowError) as caught:
        _create(changenow)
    assert caught.value.transient
    assert len(control.state()["exchanges"]) == 1  # the answer was lost, not the exchange


def test_a_failed_create_that_was_refused_creates_nothing(
    changenow: ChangeNowClient, control: Control
) -> None:
    control.fail(
        path="/v2/exchange", method="POST", status=503, error="internal_error", message="try later"
    )
    with pytest.raises(ChangeNowError, match="try later"):
        _create(changenow)
    assert control.state()["exchanges"] == []


def test_a_deposit_in_the_wrong_asset_is_recorded_but_not_credited(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _create(changenow, "eth")
    wallet.broadcast(
        wallet.sign(wallet.build_erc20_transfer(created.payin_address, Decimal("50"), nonce=0))
    )
    control.advance(60)
    assert changenow.get_exchange(created.id).status == "waiting"
    deposit = control.state()["deposits"][0]
    assert deposit["exchange_id"] is None and "wrong asset" in deposit["note"]


def test_a_second_deposit_is_not_credited_twice(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _create(changenow, "eth")
    for nonce in (0, 1):
        wallet.broadcast(
            wallet.sign(
                wallet.build_eth_transfer(created.payin_address, Decimal("0.1"), nonce=nonce)
            )
        )
    assert changenow.get_exchange(created.id).amount_from == Decimal("0.1")
    notes = [d["note"] for d in control.state()["deposits"]]
    assert notes[0] is None and "second deposit" in notes[1]


def test_a_deposit_below_the_minimum_is_refunded(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _create(changenow, "eth", refund_address=wallet.host_address)
    wallet.broadcast(
        wallet.sign(wallet.build_eth_transfer(created.payin_address, Decimal("0.001"), nonce=0))
    )
    control.advance(60)
    exchange = changenow.get_exchange(created.id)
    assert exchange.status == "refunded" and exchange.amount_from == Decimal("0.001")


def test_a_fixed_rate_exchange_expires_when_unfunded(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    quote = changenow.get_estimate("eth", "btc", from_amount=Decimal("0.1"), flow="fixed-rate")
    created = _create(changenow, flow="fixed-rate", rate_id=quote.rate_id)
    assert changenow.get_exchange(created.id).status == "waiting"
    control.advance(601)
    assert changenow.get_exchange(created.id).status == "expired"
    # Funds sent after expiry are seen by the provider but the exchange stays expired.
    wallet.broadcast(
        wallet.sign(wallet.build_eth_transfer(created.payin_address, Decimal("0.1"), nonce=0))
    )
    late = changenow.get_exchange(created.id)
    assert late.status == "expired" and late.amount_from == Decimal("0.1") and late.payin_hash


def test_state_exposes_exchanges_deposits_balances_and_transactions(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _create(changenow, "usdt", "25")
    tx_hash = wallet.broadcast(
        wallet.sign(wallet.build_erc20_transfer(created.payin_address, Decimal("25"), nonce=0))
    )
    state = control.state()
    assert state["exchanges"][0]["id"] == created.id
    assert state["deposits"][0]["tx_hash"] == tx_hash
    assert state["balances"][created.payin_address]["usdt"] == "25.000000"
    assert state["transactions"][0]["usdt"] == "25.000000"
    host = state["balances"]["0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"]
    assert host["usdt"] == "99975.000000" and host["nonce"] == 1
    control.post("/_sandbox/reset")
    assert control.state()["exchanges"] == [] and control.state()["transactions"] == []


def test_json_rpc_batches_and_protocol_errors(sandbox: SandboxServer) -> None:
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_nope", "params": []},
    ]
    answers = requests.post(sandbox.rpc_url, json=batch, timeout=5).json()
    assert answers[0]["result"] == "0x539" and answers[1]["error"]["code"] == -32601
    parse = requests.post(sandbox.rpc_url, data=b"{not json", timeout=5).json()
    assert parse["error"]["code"] == -32700
    root = requests.post(f"{sandbox.url}/", json=batch[0], timeout=5).json()
    assert root["result"] == "0x539"  # "/" is an alias of "/rpc"


def test_injected_json_rpc_errors(wallet: WalletClient, control: Control) -> None:
    control.fail(
        path="/rpc",
        rpc_method="eth_chainId",
        rpc_error={"code": -32000, "message": "header not found"},
    )
    with pytest.raises(Exception, match="header not found"):
        wallet.chain_id()
    assert wallet.chain_id() == 1337


def test_manage_py_sandbox_serves_both_apis_as_a_subprocess() -> None:
    env = {**os.environ, "SANDBOX_CHAIN_ID": "4242", "PYTHONUNBUFFERED": "1"}
    env.setdefault("SECRET_KEY", "sandbox-subprocess-test-key-" + "x" * 40)
    process = subprocess.Popen(
        [sys.executable, "manage.py", "sandbox", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if "listening on" in line or not line:
                break
        match = re.search(r"listening on (http://[\d.]+:\d+)", line)
        assert match, f"sandbox did not start: {line!r}"
        url = match.group(1)
        assert ChangeNowClient(url, "k", retry=ONE_TRY).get_min_amount("eth", "usdt") > 0
        assert WalletClient(f"{url}/rpc").chain_id() == 4242
    finally:
        process.terminate()
        process.wait(timeout=10)
