"""The wallet client against a real chain: anvil (Foundry's node, npm @foundry-rs/anvil).

anvil's default accounts are unlocked, so it is a JSON-RPC signer like the production one.
A missing anvil FAILS these tests (never skips): run `make tools` (scripts/install_tools.sh)
or set ANVIL_BIN.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from eth_abi import encode

from integrations.errors import WalletError, WalletErrorKind
from integrations.wallet.client import Fees, Receipt, WalletClient

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
HOST = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"  # anvil account 0
OTHER = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # anvil account 1
EMPTY = "0x000000000000000000000000000000000000bEEF"  # holds nothing, signs nothing


def anvil_binary() -> str | None:
    """The native binary shipped by the npm package, else its node wrapper, else PATH."""
    if os.environ.get("ANVIL_BIN"):
        configured = os.environ["ANVIL_BIN"]
        return configured if os.access(configured, os.X_OK) else None
    native = sorted(glob.glob(str(ROOT / ".tools/node_modules/@foundry-rs/anvil-*/bin/anvil")))
    if native:
        return native[0]
    wrapper = ROOT / ".tools/node_modules/.bin/anvil"
    if wrapper.exists():
        return str(wrapper)
    return shutil.which("anvil")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def anvil_url() -> Iterator[str]:
    binary = anvil_binary()
    if binary is None:
        pytest.fail(
            "anvil is not installed, so the real-chain wallet tests cannot run. Install it "
            "with `make tools` (npm install @foundry-rs/anvil into .tools/) or set ANVIL_BIN.",
            pytrace=False,
        )
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--host", "127.0.0.1", "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        client = WalletClient(url, timeout=(1, 2))
        deadline = time.monotonic() + 20
        while True:
            try:
                client.chain_id()
                break
            except WalletError:
                if process.poll() is not None or time.monotonic() > deadline:
                    stderr = process.stderr.read().decode() if process.stderr else ""
                    pytest.fail(f"anvil did not start ({binary}): {stderr}", pytrace=False)
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def token(anvil_url: str) -> str:
    """Deploy the fixture ERC-20 (6 decimals, 1,000,000 units to account 0)."""
    artifact = json.loads((FIXTURES / "TestToken.json").read_text())
    supply = 1_000_000 * 10**6
    data = artifact["bytecode"] + encode(["uint256"], [supply]).hex()
    client = WalletClient(anvil_url)
    tx_hash = client.rpc(
        "eth_sendTransaction", [{"from": HOST, "data": data, "gas": hex(2_000_000)}]
    )
    # anvil mines asynchronously: under load the receipt lags the send by a moment.
    deadline = time.monotonic() + 10
    while (receipt := client.rpc("eth_getTransactionReceipt", [tx_hash])) is None:
        assert time.monotonic() < deadline, "the token deployment was never mined"
        time.sleep(0.02)
    assert receipt["status"] == "0x1"
    return receipt["contractAddress"]


@pytest.fixture
def wallet(anvil_url: str, token: str) -> WalletClient:
    return WalletClient(anvil_url, host_address=HOST, usdt_contract=token, expected_chain_id=31337)


def _wait_for_receipt(wallet: WalletClient, tx_hash: str) -> Receipt:
    """anvil's automine is asynchronous: a receipt can lag the broadcast by a moment."""
    deadline = time.monotonic() + 10
    while (receipt := wallet.get_receipt(tx_hash)) is None:
        assert time.monotonic() < deadline, f"{tx_hash} was never mined"
        time.sleep(0.02)
    return receipt


def _automine(wallet: WalletClient, enabled: bool) -> None:
    wallet.rpc("evm_setAutomine", [enabled])


def _send(wallet: WalletClient, tx: Any) -> str:
    tx_hash = wallet.broadcast(wallet.sign(tx))
    _wait_for_receipt(wallet, tx_hash)
    return tx_hash


def test_it_sends_native_eth_on_anvil(wallet: WalletClient) -> None:
    before = wallet.get_balance(OTHER)
    tx = wallet.build_eth_transfer(OTHER, Decimal("1.25"), nonce=wallet.get_nonce())
    signed = wallet.sign(tx)
    assert wallet.broadcast(signed) == signed.hash
    receipt = _wait_for_receipt(wallet, signed.hash)
    assert receipt.succeeded and receipt.gas_used == 21_000
    assert wallet.get_balance(OTHER) - before == Decimal("1.25")


def test_it_sends_an_erc20_transfer_to_a_deployed_token(wallet: WalletClient, token: str) -> None:
    assert wallet.get_token_balance() == Decimal("1000000")
    tx = wallet.build_erc20_transfer(OTHER, Decimal("12.345678"), nonce=wallet.get_nonce())
    assert tx.to.lower() == token.lower()
    signed = wallet.sign(tx)
    wallet.broadcast(signed)
    receipt = _wait_for_receipt(wallet, signed.hash)
    assert receipt.succeeded
    transfer_topic = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
    assert receipt.logs[0]["topics"][0] == transfer_topic
    assert int(receipt.logs[0]["data"], 16) == 12_345_678
    assert wallet.get_token_balance(OTHER) == Decimal("12.345678")
    assert wallet.get_token_balance() == Decimal("999987.654322")


def test_it_rebroadcasts_the_same_bytes_without_a_second_transfer(wallet: WalletClient) -> None:
    before = wallet.get_balance(OTHER)
    _automine(wallet, False)
    try:
        signed = wallet.sign(
            wallet.build_eth_transfer(OTHER, Decimal("0.5"), nonce=wallet.get_nonce())
        )
        assert wallet.broadcast(signed) == signed.hash
        with pytest.raises(WalletError) as caught:
            wallet.send_raw(signed.raw)
        assert caught.value.kind == WalletErrorKind.ALREADY_KNOWN
        assert wallet.broadcast(signed) == signed.hash
        assert wallet.get_receipt(signed.hash) is None
        wallet.rpc("evm_mine", [])
    finally:
        _automine(wallet, True)
    assert _wait_for_receipt(wallet, signed.hash).succeeded
    assert wallet.broadcast(signed) == signed.hash  # mined: anvil says nonce too low
    assert wallet.get_balance(OTHER) - before == Decimal("0.5")  # once


def test_it_reports_nonce_too_low_for_a_new_transaction_on_a_used_nonce(
    wallet: WalletClient,
) -> None:
    used = wallet.get_nonce()
    _send(wallet, wallet.build_eth_transfer(OTHER, Decimal("0.1"), nonce=used))
    stale = wallet.sign(wallet.build_eth_transfer(OTHER, Decimal("0.2"), nonce=used))
    with pytest.raises(WalletError) as caught:
        wallet.broadcast(stale)
    assert caught.value.kind == WalletErrorKind.NONCE_TOO_LOW and caught.value.permanent


def test_it_reports_insufficient_funds_before_and_at_the_node(wallet: WalletClient) -> None:
    too_much = Decimal("20000")  # anvil accounts hold 10,000 ETH
    with pytest.raises(WalletError) as caught:
        wallet.build_eth_transfer(OTHER, too_much, nonce=wallet.get_nonce())
    assert caught.value.kind == WalletErrorKind.INSUFFICIENT_FUNDS
    tx = wallet.build_eth_transfer(
        OTHER, too_much, nonce=wallet.get_nonce(), gas=21_000, check_balance=False
    )
    with pytest.raises(WalletError) as caught:
        wallet.broadcast(wallet.sign(tx))
    assert caught.value.kind == WalletErrorKind.INSUFFICIENT_FUNDS


def test_it_refuses_a_token_transfer_beyond_the_token_balance(wallet: WalletClient) -> None:
    with pytest.raises(WalletError) as caught:
        wallet.build_erc20_transfer(OTHER, Decimal("2000000"), nonce=wallet.get_nonce())
    assert caught.value.kind == WalletErrorKind.INSUFFICIENT_FUNDS
    with pytest.raises(WalletError) as caught:  # the node's own check (estimateGas reverts)
        wallet.build_erc20_transfer(
            OTHER, Decimal("2000000"), nonce=wallet.get_nonce(), check_balance=False
        )
    assert caught.value.kind == WalletErrorKind.REVERTED


def test_it_reports_an_underpriced_transaction(wallet: WalletClient) -> None:
    cheap = Fees(max_fee_per_gas=1, max_priority_fee_per_gas=1)
    signed = wallet.sign(
        wallet.build_eth_transfer(OTHER, Decimal("0.1"), nonce=wallet.get_nonce(), fees=cheap)
    )
    with pytest.raises(WalletError) as caught:
        wallet.broadcast(signed)
    assert caught.value.kind == WalletErrorKind.UNDERPRICED


def test_it_reports_an_account_without_a_signer(anvil_url: str) -> None:
    stranger = WalletClient(anvil_url, host_address=EMPTY)
    tx = stranger.build_eth_transfer(
        OTHER,
        Decimal("0.1"),
        nonce=0,
        gas=21_000,
        fees=Fees(gas_price=2 * 10**9),
        check_balance=False,
    )
    with pytest.raises(WalletError) as caught:
        stranger.sign(tx)
    assert caught.value.kind == WalletErrorKind.SIGNER_UNAVAILABLE


def test_it_signs_legacy_transactions_too(wallet: WalletClient) -> None:
    tx = wallet.build_eth_transfer(
        OTHER, Decimal("0.3"), nonce=wallet.get_nonce(), fees=Fees(gas_price=3 * 10**9)
    )
    signed = wallet.sign(tx)
    assert signed.decoded is not None and signed.decoded.type == 0
    assert signed.decoded.chain_id == 31337  # EIP-155 replay protection
    wallet.broadcast(signed)
    receipt = _wait_for_receipt(wallet, signed.hash)
    assert receipt.effective_gas_price == 3 * 10**9


def test_it_returns_no_receipt_for_an_unknown_transaction(wallet: WalletClient) -> None:
    assert wallet.get_receipt("0x" + "12" * 32) is None
