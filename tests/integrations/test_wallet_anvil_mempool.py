"""Replacement, cancel and confirmations on a real node: anvil with ``--no-mining``, so
transactions wait in its mempool until the test mines a block (``evm_mine``).

anvil's pool is laxer than geth's: a replacement only needs a strictly higher fee cap (geth
wants both caps up by 10 %, which the sandbox tests). Equal fees are refused by both.
A missing anvil FAILS these tests (never skips): run `make tools` or set ANVIL_BIN.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal

import pytest
from eth_abi import encode

from integrations.errors import WalletError, WalletErrorKind
from integrations.wallet.client import (
    Fees,
    SignedTx,
    TxRequest,
    WalletClient,
    bump_fees,
    erc20_transfer_logged,
)
from tests.integrations.test_wallet_anvil import FIXTURES, HOST, OTHER, anvil_binary

GWEI = 10**9
CEILING = 200 * GWEI


@pytest.fixture(scope="module")
def node_url() -> Iterator[str]:
    binary = anvil_binary()
    if binary is None:
        pytest.fail(
            "anvil is not installed, so the real-chain mempool tests cannot run. Install it "
            "with `make tools` (npm install @foundry-rs/anvil into .tools/) or set ANVIL_BIN.",
            pytrace=False,
        )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--host", "127.0.0.1", "--silent", "--no-mining"],
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
def token(node_url: str) -> str:
    """The fixture ERC-20 (6 decimals, 1,000,000 units to account 0), mined by hand."""
    artifact = json.loads((FIXTURES / "TestToken.json").read_text())
    data = artifact["bytecode"] + encode(["uint256"], [1_000_000 * 10**6]).hex()
    client = WalletClient(node_url)
    tx_hash = client.rpc(
        "eth_sendTransaction", [{"from": HOST, "data": data, "gas": hex(2_000_000)}]
    )
    client.rpc("evm_mine", [])
    receipt = client.rpc("eth_getTransactionReceipt", [tx_hash])
    assert receipt is not None and receipt["status"] == "0x1"
    return receipt["contractAddress"]


@pytest.fixture
def wallet(node_url: str, token: str) -> Iterator[WalletClient]:
    client = WalletClient(node_url, host_address=HOST, usdt_contract=token, expected_chain_id=31337)
    yield client
    client.rpc("evm_mine", [])  # leave an empty mempool to the next test


def _send(wallet: WalletClient, tx: TxRequest) -> SignedTx:
    signed = wallet.sign(tx)
    assert wallet.broadcast(signed) == signed.hash
    return signed


def _next(wallet: WalletClient) -> int:
    nonce = wallet.get_nonce()
    assert nonce == wallet.get_confirmed_nonce(), "a previous test left a pending transaction"
    return nonce


def test_it_replaces_a_pending_transfer_at_the_same_nonce_and_only_one_mines(
    wallet: WalletClient,
) -> None:
    before = wallet.get_balance(OTHER)
    tx = wallet.build_eth_transfer(OTHER, Decimal("0.75"), nonce=_next(wallet))
    old = _send(wallet, tx)
    assert wallet.get_receipt(old.hash) is None  # held: anvil runs with --no-mining
    bumped = bump_fees(
        tx.max_fee_per_gas, tx.max_priority_fee_per_gas, wallet.suggest_fees(), ceiling_wei=CEILING
    )
    assert not bumped.capped
    new = _send(wallet, tx.with_fees(bumped.fees))
    assert new.hash != old.hash
    assert wallet.get_transaction(old.hash) is None  # the pool dropped the replaced one
    assert wallet.get_nonce() == tx.nonce + 1  # one pending transaction at that nonce

    wallet.rpc("evm_mine", [])
    receipt = wallet.get_receipt(new.hash)
    assert receipt is not None and receipt.succeeded
    assert wallet.get_receipt(old.hash) is None
    assert wallet.get_balance(OTHER) - before == Decimal("0.75")  # once
    assert wallet.get_confirmed_nonce() == tx.nonce + 1
    with pytest.raises(WalletError) as caught:  # the replaced bytes are dead for good
        wallet.broadcast(old)
    assert caught.value.kind == WalletErrorKind.NONCE_TOO_LOW
    assert wallet.get_receipt(old.hash) is None


def test_a_cancel_at_the_same_nonce_fills_it_instead_of_a_token_transfer(
    wallet: WalletClient, token: str
) -> None:
    tokens_before = wallet.get_token_balance(OTHER)
    transfer = wallet.build_erc20_transfer(OTHER, Decimal("12.5"), nonce=_next(wallet))
    old = _send(wallet, transfer)
    bumped = bump_fees(
        transfer.max_fee_per_gas,
        transfer.max_priority_fee_per_gas,
        wallet.suggest_fees(),
        ceiling_wei=CEILING,
    )
    cancel = wallet.build_cancel(nonce=transfer.nonce, fees=bumped.fees)
    assert cancel.is_cancel
    signed = _send(wallet, cancel)
    eth_before = wallet.get_balance_wei()

    wallet.rpc("evm_mine", [])
    receipt = wallet.get_receipt(signed.hash)
    assert receipt is not None and receipt.succeeded and receipt.gas_used == 21_000
    assert wallet.get_receipt(old.hash) is None
    assert not erc20_transfer_logged(receipt, token, HOST, OTHER, 12_500_000)
    assert wallet.get_token_balance(OTHER) == tokens_before
    assert wallet.get_confirmed_nonce() == transfer.nonce + 1
    assert wallet.get_balance_wei() == eth_before - receipt.fee_wei  # gas only, nothing moved


def test_an_underpriced_replacement_is_refused_and_the_original_mines(
    wallet: WalletClient,
) -> None:
    fees = Fees(max_fee_per_gas=5 * GWEI, max_priority_fee_per_gas=GWEI)
    nonce = _next(wallet)
    original = _send(
        wallet, wallet.build_eth_transfer(OTHER, Decimal("0.1"), nonce=nonce, fees=fees)
    )
    same_fees = wallet.sign(
        wallet.build_eth_transfer(OTHER, Decimal("0.2"), nonce=nonce, fees=fees)
    )
    lower = wallet.sign(
        wallet.build_eth_transfer(
            OTHER,
            Decimal("0.2"),
            nonce=nonce,
            fees=Fees(max_fee_per_gas=4 * GWEI, max_priority_fee_per_gas=GWEI),
        )
    )
    for attempt in (same_fees, lower):
        with pytest.raises(WalletError) as caught:
            wallet.broadcast(attempt)
        assert caught.value.kind == WalletErrorKind.UNDERPRICED
        assert "replacement transaction underpriced" in caught.value.message
    wallet.rpc("evm_mine", [])
    receipt = wallet.get_receipt(original.hash)
    assert receipt is not None and receipt.succeeded
    assert wallet.get_receipt(same_fees.hash) is None and wallet.get_receipt(lower.hash) is None


def test_a_mined_token_transfer_has_the_transfer_log_and_confirmations_grow(
    wallet: WalletClient, token: str
) -> None:
    signed = _send(
        wallet, wallet.build_erc20_transfer(OTHER, Decimal("3.000001"), nonce=_next(wallet))
    )
    wallet.rpc("evm_mine", [])
    receipt = wallet.get_receipt(signed.hash)
    assert receipt is not None and receipt.succeeded and receipt.fee_wei
    assert erc20_transfer_logged(receipt, token, HOST, OTHER, 3_000_001)
    assert not erc20_transfer_logged(receipt, token, HOST, OTHER, 3_000_000)
    assert not erc20_transfer_logged(receipt, OTHER, HOST, OTHER, 3_000_001)  # not that contract
    assert receipt.confirmations(wallet.get_block_number()) == 1
    wallet.rpc("anvil_mine", [hex(2)])  # two empty blocks
    assert receipt.confirmations(wallet.get_block_number()) == 3
    again = wallet.get_receipt(signed.hash)
    assert again is not None and again.block_hash == receipt.block_hash
