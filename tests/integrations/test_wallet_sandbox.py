"""Every wallet client call against the sandbox signer over real HTTP."""

from __future__ import annotations

from decimal import Decimal

import pytest

from integrations.assets import AmountError
from integrations.errors import WalletError, WalletErrorKind
from integrations.sandbox import SandboxServer
from integrations.wallet.client import Fees, WalletClient
from integrations.wallet.rlp import decode_transaction
from tests.conftest import Control

RECIPIENT = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def test_it_reads_chain_facts_and_balances(wallet: WalletClient) -> None:
    assert wallet.chain_id() == 1337
    assert wallet.get_nonce() == 0
    assert wallet.get_balance() == Decimal("100")
    assert wallet.get_token_balance() == Decimal("100000")
    assert wallet.get_balance(RECIPIENT) == 0
    fees = wallet.suggest_fees()
    assert fees.max_fee_per_gas == 3 * 10**9 and fees.max_priority_fee_per_gas == 10**9


def test_it_sends_eth_and_gets_a_receipt(wallet: WalletClient) -> None:
    tx = wallet.build_eth_transfer(RECIPIENT, Decimal("1.000000000000000001"), nonce=0)
    assert tx.value == 10**18 + 1 and tx.gas == 21_000
    signed = wallet.sign(tx)
    decoded = decode_transaction(bytes.fromhex(signed.raw[2:]))
    assert decoded.hash == signed.hash and decoded.value == tx.value
    assert wallet.broadcast(signed) == signed.hash
    receipt = wallet.get_receipt(signed.hash)
    assert receipt is not None and receipt.succeeded and receipt.gas_used == 21_000
    assert wallet.get_balance(RECIPIENT) == Decimal("1.000000000000000001")
    assert wallet.get_nonce() == 1
    assert receipt.fee_wei == 21_000 * 2 * 10**9


def test_it_sends_usdt_as_an_erc20_transfer(wallet: WalletClient) -> None:
    tx = wallet.build_erc20_transfer(RECIPIENT, Decimal("12.345678"), nonce=0)
    assert tx.to == "0xdAC17F958D2ee523a2206206994597C13D831ec7" and tx.value == 0
    assert tx.data.hex().startswith("a9059cbb") and tx.units == 12_345_678
    signed = wallet.sign(tx)
    wallet.broadcast(signed)
    receipt = wallet.get_receipt(signed.hash)
    assert receipt is not None and receipt.succeeded and len(receipt.logs) == 1
    assert wallet.get_token_balance(RECIPIENT) == Decimal("12.345678")
    assert wallet.get_token_balance() == Decimal("99987.654322")


def test_it_refuses_an_amount_finer_than_the_asset(wallet: WalletClient) -> None:
    with pytest.raises(AmountError, match="more than 6 decimals"):
        wallet.build_erc20_transfer(RECIPIENT, Decimal("1.0000001"), nonce=0)
    with pytest.raises(AmountError):
        wallet.build_eth_transfer(RECIPIENT, Decimal("0"), nonce=0)
    with pytest.raises(TypeError):
        wallet.build_eth_transfer(RECIPIENT, 1.5, nonce=0)  # type: ignore[arg-type]


def test_it_rebroadcasts_the_same_bytes_without_a_second_transfer(
    wallet: WalletClient, control: Control
) -> None:
    control.config(block_time=3600)  # stays pending: the node answers "already known"
    signed = wallet.sign(wallet.build_eth_transfer(RECIPIENT, Decimal("2"), nonce=0))
    assert wallet.broadcast(signed) == signed.hash
    with pytest.raises(WalletError) as caught:
        wallet.send_raw(signed.raw)
    assert caught.value.kind == WalletErrorKind.ALREADY_KNOWN
    assert wallet.broadcast(signed) == signed.hash
    assert wallet.get_receipt(signed.hash) is None  # pending
    assert wallet.get_nonce("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "pending") == 1
    control.post("/_sandbox/mine")
    assert wallet.broadcast(signed) == signed.hash  # mined: "nonce too low" for our own tx
    assert wallet.get_balance(RECIPIENT) == Decimal("2")  # exactly once
    assert len(control.state()["transactions"]) == 1


def test_it_reports_nonce_too_low_for_a_different_transaction(wallet: WalletClient) -> None:
    wallet.broadcast(wallet.sign(wallet.build_eth_transfer(RECIPIENT, Decimal("1"), nonce=0)))
    other = wallet.sign(wallet.build_eth_transfer(RECIPIENT, Decimal("3"), nonce=0))
    with pytest.raises(WalletError) as caught:
        wallet.broadcast(other)
    assert caught.value.kind == WalletErrorKind.NONCE_TOO_LOW and caught.value.permanent


def test_it_refuses_to_build_what_the_wallet_cannot_cover(wallet: WalletClient) -> None:
    with pytest.raises(WalletError) as caught:
        wallet.build_eth_transfer(RECIPIENT, Decimal("100"), nonce=0)  # gas on top
    assert caught.value.kind == WalletErrorKind.INSUFFICIENT_FUNDS
    with pytest.raises(WalletError) as caught:
        wallet.build_erc20_transfer(RECIPIENT, Decimal("100000.000001"), nonce=0)
    assert caught.value.kind == WalletErrorKind.INSUFFICIENT_FUNDS


def test_the_signer_refuses_what_the_wallet_cannot_cover(
    wallet: WalletClient, control: Control
) -> None:
    control.post("/_sandbox/fund", {"eth": "0.5", "usdt": "10"})
    eth = wallet.build_eth_transfer(
        RECIPIENT, Decimal("1"), nonce=0, gas=21_000, check_balance=False
    )
    with pytest.raises(WalletError) as caught:
        wallet.sign(eth)
    assert caught.value.kind == WalletErrorKind.INSUFFICIENT_FUNDS
    usdt = wallet.build_erc20_transfer(
        RECIPIENT, Decimal("11"), nonce=0, gas=60_000, check_balance=False
    )
    with pytest.raises(WalletError) as caught:
        wallet.sign(usdt)
    assert caught.value.kind == WalletErrorKind.INSUFFICIENT_FUNDS
    assert control.state()["transactions"] == []


def test_the_signer_counts_pending_spends(wallet: WalletClient, control: Control) -> None:
    control.config(block_time=3600)
    control.post("/_sandbox/fund", {"usdt": "10"})
    wallet.broadcast(wallet.sign(wallet.build_erc20_transfer(RECIPIENT, Decimal("6"), nonce=0)))
    second = wallet.build_erc20_transfer(
        RECIPIENT, Decimal("6"), nonce=1, gas=60_000, check_balance=False
    )
    with pytest.raises(WalletError) as caught:
        wallet.sign(second)
    assert caught.value.kind == WalletErrorKind.INSUFFICIENT_FUNDS


def test_it_reports_an_underpriced_transaction(wallet: WalletClient) -> None:
    cheap = Fees(max_fee_per_gas=10, max_priority_fee_per_gas=1)
    signed = wallet.sign(wallet.build_eth_transfer(RECIPIENT, Decimal("1"), nonce=0, fees=cheap))
    with pytest.raises(WalletError) as caught:
        wallet.broadcast(signed)
    assert caught.value.kind == WalletErrorKind.UNDERPRICED and caught.value.transient


def test_it_reports_an_account_the_signer_does_not_hold(sandbox: SandboxServer) -> None:
    stranger = WalletClient(sandbox.rpc_url, host_address=RECIPIENT)
    tx = stranger.build_eth_transfer(
        RECIPIENT,
        Decimal("1"),
        nonce=0,
        gas=21_000,
        fees=Fees(gas_price=10**9),
        check_balance=False,
    )
    with pytest.raises(WalletError) as caught:
        stranger.sign(tx)
    assert caught.value.kind == WalletErrorKind.SIGNER_UNAVAILABLE and caught.value.permanent


def test_it_accepts_geth_style_signatures_and_legacy_gas_price(
    wallet: WalletClient, control: Control
) -> None:
    control.config(sign_format="geth")
    tx = wallet.build_eth_transfer(
        RECIPIENT, Decimal("0.5"), nonce=0, fees=Fees(gas_price=5 * 10**9)
    )
    signed = wallet.sign(tx)
    assert signed.decoded is not None and signed.decoded.type == 0
    assert signed.decoded.gas_price == 5 * 10**9
    wallet.broadcast(signed)
    receipt = wallet.get_receipt(signed.hash)
    assert receipt is not None and receipt.effective_gas_price == 5 * 10**9


def test_it_checks_the_signer_is_on_the_expected_chain(sandbox: SandboxServer) -> None:
    client = WalletClient(sandbox.rpc_url, expected_chain_id=1)
    with pytest.raises(WalletError) as caught:
        client.chain_id()
    assert caught.value.kind == WalletErrorKind.WRONG_CHAIN


def test_it_maps_an_unreachable_or_failing_signer_to_transient_errors(
    wallet: WalletClient, control: Control
) -> None:
    control.fail(path="/rpc", status=502, count=1)
    with pytest.raises(WalletError) as caught:
        wallet.chain_id()
    assert caught.value.kind == WalletErrorKind.SERVER_ERROR and caught.value.transient
    control.fail(path="/rpc", rpc_method="eth_sendRawTransaction", delay=1.0, count=1)
    slow = WalletClient(wallet.rpc_url, host_address=wallet.host_address, timeout=(1, 0.3))
    signed = slow.sign(slow.build_eth_transfer(RECIPIENT, Decimal("1"), nonce=0))
    with pytest.raises(WalletError) as caught:
        slow.broadcast(signed)
    assert caught.value.kind == WalletErrorKind.TIMEOUT and caught.value.transient
    assert slow.broadcast(signed) == signed.hash  # the retry sends the same bytes


def test_it_survives_a_broadcast_whose_answer_was_lost(
    wallet: WalletClient, control: Control
) -> None:
    control.fail(path="/rpc", rpc_method="eth_sendRawTransaction", status=502, process=True)
    signed = wallet.sign(wallet.build_eth_transfer(RECIPIENT, Decimal("1"), nonce=0))
    with pytest.raises(WalletError):
        wallet.broadcast(signed)
    assert wallet.broadcast(signed) == signed.hash  # the node had it: not sent twice
    assert wallet.get_balance(RECIPIENT) == Decimal("1")


def test_it_returns_no_receipt_for_an_unknown_hash(wallet: WalletClient) -> None:
    assert wallet.get_receipt("0x" + "ab" * 32) is None
