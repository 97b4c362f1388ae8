"""Refunds as real transactions on the sandbox chain, and ChangeNOW's recovery actions
(actions, refund, continue), over real HTTP through the clients and the control API."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import requests

from integrations.changenow.client import ChangeNowClient
from integrations.changenow.types import CreatedExchange
from integrations.errors import ChangeNowError, WalletError
from integrations.sandbox import SandboxConfig, SandboxServer
from integrations.sandbox.config import DEFAULT_CHANGENOW_HOT_WALLET
from integrations.wallet.client import Receipt, WalletClient, erc20_transfer_logged
from tests.conftest import Control

HOT = DEFAULT_CHANGENOW_HOT_WALLET
CLIENT_ETH = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
CLIENT_BTC = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"
# An address nobody else in these tests pays: its balance moves only by the refund.
ELSEWHERE = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
WEI = Decimal(10) ** 18


def _eth_exchange(
    changenow: ChangeNowClient, refund_address: str | None, amount: str = "0.1"
) -> CreatedExchange:
    return changenow.create_exchange(
        from_currency="eth",
        to_currency="usdt",
        from_network="eth",
        to_network="eth",
        from_amount=Decimal(amount),
        address=CLIENT_ETH,
        refund_address=refund_address,
    )


def _usdt_exchange(
    changenow: ChangeNowClient, refund_address: str | None, amount: str = "40"
) -> CreatedExchange:
    return changenow.create_exchange(
        from_currency="usdt",
        to_currency="btc",
        from_network="eth",
        to_network="btc",
        from_amount=Decimal(amount),
        address=CLIENT_BTC,
        refund_address=refund_address,
    )


def _deposit(
    wallet: WalletClient, exchange: CreatedExchange, amount: str, asset: str = "eth"
) -> str:
    nonce = wallet.get_nonce()
    if asset == "eth":
        tx = wallet.build_eth_transfer(exchange.payin_address, Decimal(amount), nonce=nonce)
    else:
        tx = wallet.build_erc20_transfer(exchange.payin_address, Decimal(amount), nonce=nonce)
    return wallet.broadcast(wallet.sign(tx))


def _failed_after_deposit(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control, amount: str = "0.1"
) -> CreatedExchange:
    created = _eth_exchange(changenow, wallet.host_address, amount)
    _deposit(wallet, created, amount)
    control.script(created.id, outcome="failed")  # after the deposit: it fails while exchanging
    control.advance(10)
    assert changenow.get_exchange(created.id).status == "failed"
    return created


def _mined(wallet: WalletClient, tx_hash: str | None) -> Receipt:
    assert tx_hash is not None
    receipt = wallet.get_receipt(tx_hash)
    assert receipt is not None, f"{tx_hash} is not mined"
    return receipt


def _post(sandbox: SandboxServer, path: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(f"{sandbox.url}{path}", json=body, timeout=5)


def test_it_sends_a_scripted_eth_refund_as_a_mined_transaction_from_the_hot_wallet(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _eth_exchange(changenow, ELSEWHERE)
    control.script(created.id, outcome="refunded", refund_amount="0.0987")
    deposit_hash = _deposit(wallet, created, "0.1")
    before = wallet.get_balance_wei(ELSEWHERE)
    control.advance(10)

    refunded = changenow.get_exchange(created.id)
    assert refunded.status == "refunded" and refunded.refund_amount == Decimal("0.0987")
    receipt = _mined(wallet, refunded.refund_hash)
    assert receipt.succeeded and receipt.gas_used == 21_000
    assert receipt.effective_gas_price and receipt.effective_gas_price > 0
    assert receipt.block_hash and receipt.block_number == wallet.get_block_number()
    assert receipt.from_address == HOT and receipt.to == ELSEWHERE
    tx = wallet.get_transaction(receipt.tx_hash)
    assert tx is not None and tx["from"] == HOT and tx["to"] == ELSEWHERE
    assert int(tx["value"], 16) == 98_700_000_000_000_000  # 0.0987 ETH, exactly
    # The refund address gains exactly the refund: the hot wallet paid the gas.
    assert wallet.get_balance_wei(ELSEWHERE) - before == int(Decimal("0.0987") * WEI)
    # ChangeNOW's own payment is not a deposit: the exchange's deposit is the only one.
    assert [d["tx_hash"] for d in control.state()["deposits"]] == [deposit_hash]
    assert control.exchange(created.id)["refundCredited"] is True


def test_it_refunds_usdt_with_a_transfer_log_from_the_token_contract(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _usdt_exchange(changenow, ELSEWHERE)
    control.script(created.id, outcome="refunded", refund_amount="39.5")
    _deposit(wallet, created, "40", "usdt")
    control.advance(10)

    refunded = changenow.get_exchange(created.id)
    assert refunded.status == "refunded" and refunded.refund_amount == Decimal("39.5")
    receipt = _mined(wallet, refunded.refund_hash)
    token = wallet.usdt_contract
    assert token is not None
    assert erc20_transfer_logged(receipt, token, HOT, ELSEWHERE, 39_500_000)
    assert not erc20_transfer_logged(receipt, token, wallet.host_address, ELSEWHERE, 39_500_000)
    tx = wallet.get_transaction(receipt.tx_hash)
    assert tx is not None and tx["to"].lower() == token.lower() and int(tx["value"], 16) == 0
    assert wallet.get_token_balance(ELSEWHERE) == Decimal("39.5")


def test_the_hot_wallet_is_not_an_account_our_signer_can_sign_for(wallet: WalletClient) -> None:
    assert HOT not in wallet.rpc("eth_accounts")
    with pytest.raises(WalletError, match="unknown account"):
        wallet.rpc("eth_signTransaction", [{"from": HOT, "to": CLIENT_ETH, "value": "0x1"}])
    assert wallet.get_balance(HOT) > Decimal("1000")  # funded for refunds


def test_without_a_refund_address_the_refund_goes_back_to_the_sender(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _eth_exchange(changenow, None)
    control.script(created.id, outcome="refunded", refund_amount="0.05")
    _deposit(wallet, created, "0.1")
    control.advance(10)
    receipt = _mined(wallet, changenow.get_exchange(created.id).refund_hash)
    assert receipt.to == wallet.host_address


def test_a_drained_hot_wallet_is_topped_up_so_the_refund_still_goes_out(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    control.post("/_sandbox/fund", {"address": HOT, "eth": "0", "usdt": "0"})
    created = _usdt_exchange(changenow, ELSEWHERE)
    control.script(created.id, outcome="refunded", refund_amount="12")
    _deposit(wallet, created, "40", "usdt")
    control.advance(10)
    receipt = _mined(wallet, changenow.get_exchange(created.id).refund_hash)
    assert receipt.succeeded and wallet.get_token_balance(ELSEWHERE) == Decimal("12")


def test_actions_are_offered_only_after_a_failed_deposit(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _eth_exchange(changenow, wallet.host_address)
    waiting = changenow.get_actions(created.id)
    assert (waiting.refund, waiting.continue_) == (False, False)
    assert changenow.get_exchange(created.id).actions_available is False

    _deposit(wallet, created, "0.1")
    control.script(created.id, outcome="failed")
    confirming = changenow.get_actions(created.id)  # deposit in, not failed yet
    assert changenow.get_exchange(created.id).status == "confirming"
    assert not confirming.available

    control.advance(10)
    offered = changenow.get_actions(created.id)
    assert offered.refund and offered.continue_
    assert offered.refund_amount == Decimal("0.1") and offered.refund_address == (
        wallet.host_address
    )
    assert offered.continue_estimate is not None and offered.continue_estimate > 0
    assert changenow.get_exchange(created.id).actions_available is True


def test_a_deposit_that_arrives_after_expiry_can_be_refunded(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    quote = changenow.get_estimate(
        "eth", "usdt", from_amount=Decimal("0.1"), to_network="eth", flow="fixed-rate"
    )
    created = changenow.create_exchange(
        from_currency="eth",
        to_currency="usdt",
        from_network="eth",
        to_network="eth",
        from_amount=Decimal("0.1"),
        address=CLIENT_ETH,
        refund_address=wallet.host_address,
        flow="fixed-rate",
        rate_id=quote.rate_id,
    )
    control.advance(601)
    assert not changenow.get_actions(created.id).available  # expired, nothing received
    _deposit(wallet, created, "0.1")
    late = changenow.get_actions(created.id)
    assert changenow.get_exchange(created.id).status == "expired"
    assert late.refund and late.continue_
    changenow.request_refund(created.id, address=ELSEWHERE)
    refunded = changenow.get_exchange(created.id)
    assert refunded.status == "refunded"
    assert _mined(wallet, refunded.refund_hash).to == ELSEWHERE
    assert wallet.get_balance(ELSEWHERE) == Decimal("0.1")


def test_no_actions_for_an_exchange_that_failed_without_a_deposit_or_finished(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    unfunded = _eth_exchange(changenow, wallet.host_address)
    control.script(unfunded.id, outcome="failed")
    assert changenow.get_exchange(unfunded.id).status == "failed"
    assert not changenow.get_actions(unfunded.id).available

    finished = _eth_exchange(changenow, wallet.host_address)
    _deposit(wallet, finished, "0.1")
    control.advance(10)
    assert changenow.get_exchange(finished.id).status == "finished"
    assert not changenow.get_actions(finished.id).available
    assert changenow.get_exchange(finished.id).actions_available is False


def test_a_requested_refund_goes_to_the_address_given_less_the_refund_fee(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    control.config(refund_fee="0.0015")
    created = _failed_after_deposit(changenow, wallet, control)
    assert changenow.get_actions(created.id).refund_amount == Decimal("0.0985")
    before = wallet.get_balance_wei(ELSEWHERE)

    changenow.request_refund(created.id, address=ELSEWHERE)

    refunded = changenow.get_exchange(created.id)
    assert refunded.status == "refunded" and refunded.refund_amount == Decimal("0.0985")
    assert refunded.actions_available is False
    receipt = _mined(wallet, refunded.refund_hash)
    assert receipt.succeeded and receipt.to == ELSEWHERE and receipt.from_address == HOT
    tx = wallet.get_transaction(receipt.tx_hash)
    assert tx is not None and int(tx["value"], 16) == int(Decimal("0.0985") * WEI)
    assert wallet.get_balance_wei(ELSEWHERE) - before == int(Decimal("0.0985") * WEI)
    assert not changenow.get_actions(created.id).available
    control.advance(3600)  # refunded is final: nothing more is sent
    assert changenow.get_exchange(created.id).refund_hash == refunded.refund_hash
    assert wallet.get_balance_wei(ELSEWHERE) - before == int(Decimal("0.0985") * WEI)


def test_a_requested_usdt_refund_is_an_erc20_transfer_to_the_host_wallet(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _usdt_exchange(changenow, wallet.host_address, "25")
    _deposit(wallet, created, "25", "usdt")
    control.script(created.id, outcome="failed")
    control.advance(10)
    before = wallet.get_token_balance_units()

    changenow.request_refund(created.id, address=wallet.host_address)

    refunded = changenow.get_exchange(created.id)
    assert refunded.status == "refunded" and refunded.refund_amount == Decimal("25")
    receipt = _mined(wallet, refunded.refund_hash)
    assert wallet.usdt_contract is not None
    assert erc20_transfer_logged(
        receipt, wallet.usdt_contract, HOT, wallet.host_address, 25_000_000
    )
    assert wallet.get_token_balance_units() - before == 25_000_000


def test_a_continue_carries_a_failed_exchange_on_to_finished(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _failed_after_deposit(changenow, wallet, control)
    estimate = changenow.get_actions(created.id).continue_estimate

    changenow.request_continue(created.id)

    assert changenow.get_exchange(created.id).status == "exchanging"
    assert not changenow.get_actions(created.id).available
    control.advance(2)
    assert changenow.get_exchange(created.id).status == "sending"
    control.advance(2)
    finished = changenow.get_exchange(created.id)
    assert finished.status == "finished" and finished.amount_to == estimate
    assert finished.amount_to is not None and finished.amount_to > 0
    assert finished.payout_hash and finished.refund_hash is None
    assert control.exchange(created.id)["refundCredited"] is False


def test_refund_and_continue_are_refused_when_not_offered(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control, sandbox: SandboxServer
) -> None:
    waiting = _eth_exchange(changenow, wallet.host_address)
    for path, body in (
        ("/v2/exchange/refund", {"id": waiting.id, "address": ELSEWHERE}),
        ("/v2/exchange/continue", {"id": waiting.id}),
    ):
        response = _post(sandbox, path, body)
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "action_not_available"
    with pytest.raises(ChangeNowError) as caught:
        changenow.request_refund(waiting.id, address=ELSEWHERE)
    assert caught.value.code == "action_not_available" and caught.value.permanent
    assert changenow.get_exchange(waiting.id).status == "waiting"  # nothing happened

    done = _failed_after_deposit(changenow, wallet, control)
    changenow.request_continue(done.id)
    with pytest.raises(ChangeNowError) as caught:
        changenow.request_refund(done.id, address=ELSEWHERE)
    assert caught.value.code == "action_not_available"
    with pytest.raises(ChangeNowError) as caught:
        changenow.request_continue(done.id)
    assert caught.value.code == "action_not_available"
    assert wallet.get_balance_wei(ELSEWHERE) == 0

    missing = _post(sandbox, "/v2/exchange/refund", {"id": "00000000000000", "address": HOT})
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    with pytest.raises(ChangeNowError) as caught:
        changenow.get_actions("00000000000000")
    assert caught.value.code == "not_found"


def test_a_refund_to_an_invalid_address_is_refused_and_changes_nothing(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _failed_after_deposit(changenow, wallet, control)
    with pytest.raises(ChangeNowError) as caught:
        changenow.request_refund(created.id, address=CLIENT_BTC)  # not an Ethereum address
    assert caught.value.code == "not_valid_refund_address"
    assert changenow.get_actions(created.id).refund  # still on offer


def test_a_refund_fee_larger_than_the_deposit_is_refused(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _failed_after_deposit(changenow, wallet, control)
    control.config(refund_fee="1")
    with pytest.raises(ChangeNowError) as caught:
        changenow.request_refund(created.id, address=ELSEWHERE)
    assert caught.value.code == "not_valid_params"
    assert changenow.get_exchange(created.id).status == "failed"


def test_a_reorg_undoes_a_refund_transaction_and_it_mines_again(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    control.config(auto_mine=False)
    created = _eth_exchange(changenow, ELSEWHERE)
    control.script(created.id, outcome="refunded", refund_amount="0.08")
    _deposit(wallet, created, "0.1")
    control.post("/_sandbox/mine")
    control.advance(10)

    refund_hash = changenow.get_exchange(created.id).refund_hash
    assert refund_hash is not None
    assert control.state()["mempool"] == [refund_hash]  # broadcast, waiting for a block
    assert wallet.get_receipt(refund_hash) is None and wallet.get_balance(ELSEWHERE) == 0
    control.post("/_sandbox/mine")
    first = _mined(wallet, refund_hash)
    assert wallet.get_balance(ELSEWHERE) == Decimal("0.08")

    answer = control.post("/_sandbox/reorg", {"depth": 1})
    assert answer["requeued"] == [refund_hash]
    assert wallet.get_receipt(refund_hash) is None
    assert wallet.get_balance(ELSEWHERE) == 0  # the refund is undone with its block
    assert changenow.get_exchange(created.id).refund_hash == refund_hash

    control.post("/_sandbox/mine")
    again = _mined(wallet, refund_hash)
    assert again.block_hash != first.block_hash
    assert wallet.get_balance(ELSEWHERE) == Decimal("0.08")  # paid once, not twice


def test_a_reorg_that_drops_a_refund_leaves_a_refund_hash_the_chain_does_not_know(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _eth_exchange(changenow, ELSEWHERE)
    control.script(created.id, outcome="refunded", refund_amount="0.08")
    _deposit(wallet, created, "0.1")
    control.advance(10)
    refund_hash = changenow.get_exchange(created.id).refund_hash
    assert refund_hash is not None
    _mined(wallet, refund_hash)

    control.post("/_sandbox/reorg", {"depth": 1, "drop": True})
    control.advance(60)
    assert wallet.get_transaction(refund_hash) is None
    assert wallet.get_receipt(refund_hash) is None and wallet.get_balance(ELSEWHERE) == 0
    # ChangeNOW still names it: by-id alone never proves a refund arrived.
    exchange = changenow.get_exchange(created.id)
    assert exchange.status == "refunded" and exchange.refund_hash == refund_hash


def test_config_refuses_a_hot_wallet_the_signer_manages() -> None:
    config = SandboxConfig()
    with pytest.raises(ValueError, match="must not be an account the signer manages"):
        config.update({"changenow_hot_wallet": config.host_wallet})
    with pytest.raises(ValueError, match="not an address"):
        SandboxConfig().update({"changenow_hot_wallet": "nope"})
    with pytest.raises(ValueError, match="must not be negative"):
        SandboxConfig().update({"refund_fee": "-1"})
