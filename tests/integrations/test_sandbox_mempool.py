"""The sandbox chain as a node with a mempool: held transactions, same-nonce replacement
(geth's rule), nonce gaps, confirmations, reorgs, eviction and stuck fees; driven over real
HTTP through the wallet client and the control API."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from integrations.changenow.client import ChangeNowClient
from integrations.errors import WalletError, WalletErrorKind
from integrations.wallet.client import Fees, SignedTx, TxRequest, WalletClient, bump_fees
from tests.conftest import Control

HOST = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
RECIPIENT = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
GWEI = 10**9
CEILING = 200 * GWEI
BASE = Fees(max_fee_per_gas=3 * GWEI, max_priority_fee_per_gas=GWEI)  # the default suggestion


@pytest.fixture
def mempool(control: Control) -> Control:
    control.config(auto_mine=False)
    return control


def _eth(wallet: WalletClient, nonce: int, amount: str = "1", fees: Fees = BASE) -> TxRequest:
    return wallet.build_eth_transfer(RECIPIENT, Decimal(amount), nonce=nonce, fees=fees)


def _send(wallet: WalletClient, tx: TxRequest) -> SignedTx:
    signed = wallet.sign(tx)
    assert wallet.broadcast(signed) == signed.hash
    return signed


def _tx(control: Control, tx_hash: str) -> dict[str, Any]:
    return next(t for t in control.state()["transactions"] if t["hash"] == tx_hash)


def _control_error(control: Control, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = control.session.post(f"{control.url}{path}", json=body, timeout=5)
    assert response.status_code == 400, response.text
    return response.json()


def _host_funds(control: Control) -> dict[str, Any]:
    balances = control.state()["balances"]
    return {a: balances.get(a) for a in (HOST, RECIPIENT)}


def test_it_holds_transactions_until_mined_then_puts_them_in_one_block_in_nonce_order(
    wallet: WalletClient, mempool: Control
) -> None:
    head = wallet.get_block_number()
    sent = [_send(wallet, _eth(wallet, nonce)) for nonce in range(3)]
    assert all(wallet.get_receipt(s.hash) is None for s in sent)
    assert wallet.get_balance(RECIPIENT) == 0
    assert wallet.get_confirmed_nonce() == 0 and wallet.get_nonce(HOST, "pending") == 3
    assert wallet.get_block_number() == head
    assert mempool.state()["mempool"] == [s.hash for s in sent]

    answer = mempool.post("/_sandbox/mine")
    assert answer["mined"] == 3 and answer["blocks"] == [head + 1]
    receipts = [wallet.get_receipt(s.hash) for s in sent]
    assert [r.block_number for r in receipts if r] == [head + 1] * 3
    assert [r.raw["transactionIndex"] for r in receipts if r] == ["0x0", "0x1", "0x2"]
    assert wallet.get_block_number() == head + 1 and wallet.get_confirmed_nonce() == 3
    assert wallet.get_balance(RECIPIENT) == Decimal("3")


def test_it_mines_only_the_hashes_it_is_asked_to_and_refuses_one_above_a_gap(
    wallet: WalletClient, mempool: Control
) -> None:
    first, second, third = (_send(wallet, _eth(wallet, nonce)) for nonce in range(3))
    error = _control_error(mempool, "/_sandbox/mine", {"hashes": [third.hash]})
    assert "not executable" in error["message"]
    assert mempool.post("/_sandbox/mine", {"hashes": [first.hash]})["hashes"] == [first.hash]
    assert wallet.get_receipt(first.hash) is not None
    assert wallet.get_receipt(second.hash) is None and wallet.get_receipt(third.hash) is None
    assert mempool.state()["mempool"] == [second.hash, third.hash]


def test_it_replaces_a_pending_transaction_with_both_caps_raised_by_12_5_percent(
    wallet: WalletClient, mempool: Control
) -> None:
    tx = _eth(wallet, 0, "2")
    old = _send(wallet, tx)
    later = _send(wallet, _eth(wallet, 1, "0.5"))
    bumped = bump_fees(tx.max_fee_per_gas, tx.max_priority_fee_per_gas, BASE, ceiling_wei=CEILING)
    assert (bumped.max_fee_per_gas, bumped.max_priority_fee_per_gas) == (
        3_375_000_000,
        1_125_000_000,
    )
    new = _send(wallet, tx.with_fees(bumped.fees))
    assert new.hash != old.hash and new.decoded and new.decoded.nonce == 0

    record = _tx(mempool, old.hash)
    assert record["replaced_by"] == new.hash and record["dropped"] == "replaced"
    assert not record["pending"]
    assert wallet.get_transaction(old.hash) is None  # the node forgot it
    assert wallet.get_nonce(HOST, "pending") == 2  # the replacement holds the same nonce

    mined = mempool.post("/_sandbox/mine")
    # The replacement arrived after nonce 1, yet the block runs nonce 0 first.
    assert mined["hashes"] == [new.hash, later.hash]
    assert wallet.get_receipt(old.hash) is None
    receipt = wallet.get_receipt(new.hash)
    assert receipt is not None and receipt.succeeded
    assert receipt.effective_gas_price == GWEI + 1_125_000_000  # base fee + the raised tip
    assert wallet.get_balance(RECIPIENT) == Decimal("2.5")  # the 2 ETH moved once

    with pytest.raises(WalletError) as caught:  # the replaced bytes can never mine now
        wallet.broadcast(old)
    assert caught.value.kind == WalletErrorKind.NONCE_TOO_LOW
    mempool.post("/_sandbox/mine", {"count": 3})
    assert wallet.get_receipt(old.hash) is None
    assert Decimal(_host_funds(mempool)[RECIPIENT]["eth"]) == Decimal("2.5")


@pytest.mark.parametrize(
    ("max_fee", "tip"),
    [
        (3_150_000_000, 1_050_000_000),  # +5 % on both
        (3_600_000_000, GWEI),  # fee cap +20 %, tip unchanged
        (3 * GWEI, 1_200_000_000),  # tip +20 %, fee cap unchanged
        (3_299_999_999, 1_100_000_000),  # one wei under +10 % on the fee cap
    ],
)
def test_it_refuses_a_replacement_that_does_not_raise_both_caps_by_ten_percent(
    wallet: WalletClient, mempool: Control, max_fee: int, tip: int
) -> None:
    tx = _eth(wallet, 0)
    old = _send(wallet, tx)
    cheap = wallet.sign(tx.with_fees(Fees(max_fee_per_gas=max_fee, max_priority_fee_per_gas=tip)))
    with pytest.raises(WalletError) as caught:
        wallet.broadcast(cheap)
    assert caught.value.kind == WalletErrorKind.UNDERPRICED
    assert "replacement transaction underpriced" in caught.value.message
    assert _tx(mempool, old.hash)["pending"]
    assert mempool.post("/_sandbox/mine")["hashes"] == [old.hash]
    assert wallet.get_receipt(cheap.hash) is None


def test_it_accepts_exactly_ten_percent_like_geth(wallet: WalletClient, mempool: Control) -> None:
    tx = _eth(wallet, 0)
    _send(wallet, tx)
    ten = Fees(max_fee_per_gas=3_300_000_000, max_priority_fee_per_gas=1_100_000_000)
    new = _send(wallet, tx.with_fees(ten))
    assert mempool.post("/_sandbox/mine")["hashes"] == [new.hash]


def test_a_cancel_at_the_same_nonce_fills_it_and_moves_nothing(
    wallet: WalletClient, mempool: Control
) -> None:
    before = wallet.get_balance_wei()
    transfer = _eth(wallet, 0, "5")
    old = _send(wallet, transfer)
    bumped = bump_fees(
        transfer.max_fee_per_gas, transfer.max_priority_fee_per_gas, None, ceiling_wei=CEILING
    )
    cancel = wallet.build_cancel(nonce=0, fees=bumped.fees)
    assert cancel.is_cancel and cancel.to == HOST and cancel.value == 0 and cancel.gas == 21_000
    signed = _send(wallet, cancel)
    assert _tx(mempool, old.hash)["replaced_by"] == signed.hash
    mempool.post("/_sandbox/mine")
    receipt = wallet.get_receipt(signed.hash)
    assert receipt is not None and receipt.succeeded and wallet.get_receipt(old.hash) is None
    assert wallet.get_confirmed_nonce() == 1
    assert wallet.get_balance(RECIPIENT) == 0
    assert wallet.get_balance_wei() == before - receipt.fee_wei  # only the cancel's gas


def test_a_cancel_replaces_a_pending_token_transfer(wallet: WalletClient, mempool: Control) -> None:
    token = wallet.build_erc20_transfer(RECIPIENT, Decimal("40"), nonce=0, fees=BASE)
    old = _send(wallet, token)
    cancel = wallet.build_cancel(
        nonce=0, max_fee_per_gas=4 * GWEI, max_priority_fee_per_gas=2 * GWEI
    )
    _send(wallet, cancel)
    mempool.post("/_sandbox/mine")
    assert wallet.get_receipt(old.hash) is None
    assert wallet.get_token_balance(RECIPIENT) == 0 and wallet.get_token_balance() == 100_000


def test_it_refuses_a_nonce_gap_in_either_mining_mode(
    wallet: WalletClient, control: Control
) -> None:
    for auto in (True, False):
        control.post("/_sandbox/reset")
        control.config(auto_mine=auto)
        with pytest.raises(WalletError) as caught:
            wallet.broadcast(wallet.sign(_eth(wallet, 1)))
        assert caught.value.kind == WalletErrorKind.NONCE_TOO_HIGH
        assert caught.value.message.endswith(
            "nonce too high: next nonce 0, tx nonce 1 (the sandbox does not queue nonce gaps)"
        )
        assert control.state()["transactions"] == []


def test_blocks_advance_and_empty_blocks_give_confirmations(
    wallet: WalletClient, mempool: Control
) -> None:
    mined = _send(wallet, _eth(wallet, 0))
    mempool.post("/_sandbox/mine")
    waiting = _send(wallet, _eth(wallet, 1))
    receipt = wallet.get_receipt(mined.hash)
    assert receipt is not None and receipt.confirmations(wallet.get_block_number()) == 1
    answer = mempool.post("/_sandbox/mine", {"empty_blocks": 2})
    assert answer["mined"] == 0 and len(answer["blocks"]) == 2
    assert receipt.confirmations(wallet.get_block_number()) == 3
    assert wallet.get_receipt(waiting.hash) is None  # empty blocks leave the mempool alone
    block = wallet.rpc("eth_getBlockByNumber", [hex(receipt.block_number + 1), False])
    assert block["transactions"] == []
    assert mempool.post("/_sandbox/mine", {"count": 2})["hashes"] == [waiting.hash]
    assert receipt.confirmations(wallet.get_block_number()) == 5


def test_a_reorg_requeues_transactions_and_restores_every_balance_exactly(
    wallet: WalletClient, mempool: Control
) -> None:
    mempool.post("/_sandbox/mine", {"empty_blocks": 1})
    head = wallet.get_block_number()
    before = _host_funds(mempool)
    eth = _send(wallet, _eth(wallet, 0, "1.5"))
    mempool.post("/_sandbox/mine")
    usdt = _send(wallet, wallet.build_erc20_transfer(RECIPIENT, Decimal("7.25"), nonce=1))
    mempool.post("/_sandbox/mine")
    first = wallet.get_receipt(eth.hash)
    assert first is not None and wallet.get_token_balance(RECIPIENT) == Decimal("7.25")

    answer = mempool.post("/_sandbox/reorg", {"depth": 2})
    assert answer["requeued"] == [eth.hash, usdt.hash] and answer["block_number"] == head
    assert wallet.get_block_number() == head
    assert _host_funds(mempool) == before  # ETH, USDT and nonces, to the wei
    assert wallet.get_receipt(eth.hash) is None and wallet.get_receipt(usdt.hash) is None
    assert wallet.get_confirmed_nonce() == 0 and wallet.get_nonce(HOST, "pending") == 2
    assert wallet.get_transaction(eth.hash) is not None  # still pending at the node

    assert mempool.post("/_sandbox/mine")["hashes"] == [eth.hash, usdt.hash]
    again = wallet.get_receipt(eth.hash)
    assert again is not None and again.block_hash != first.block_hash
    assert wallet.get_balance(RECIPIENT) == Decimal("1.5")
    assert wallet.get_token_balance(RECIPIENT) == Decimal("7.25")


def test_a_reorg_can_drop_transactions_so_only_a_rebroadcast_brings_them_back(
    wallet: WalletClient, mempool: Control
) -> None:
    before = _host_funds(mempool)
    signed = _send(wallet, _eth(wallet, 0, "3"))
    mempool.post("/_sandbox/mine")
    answer = mempool.post("/_sandbox/reorg", {"depth": 1, "drop": True, "new_blocks": 2})
    assert answer["dropped"] == [signed.hash] and answer["pending"] == []
    assert _host_funds(mempool) == before
    assert wallet.get_transaction(signed.hash) is None and wallet.get_receipt(signed.hash) is None
    assert wallet.get_nonce(HOST, "pending") == 0
    assert _tx(mempool, signed.hash)["dropped"] == "reorg"
    mempool.post("/_sandbox/mine")
    assert wallet.get_receipt(signed.hash) is None  # the node has nothing to mine

    assert wallet.broadcast(signed.raw) == signed.hash  # the stored bytes, once more
    mempool.post("/_sandbox/mine")
    receipt = wallet.get_receipt(signed.hash)
    assert receipt is not None and receipt.succeeded
    assert wallet.get_balance(RECIPIENT) == Decimal("3")


def test_a_reorg_rolls_back_a_changenow_deposit(
    changenow: ChangeNowClient, wallet: WalletClient, mempool: Control
) -> None:
    created = changenow.create_exchange(
        from_currency="eth",
        to_currency="usdt",
        from_network="eth",
        to_network="eth",
        from_amount=Decimal("0.1"),
        address=RECIPIENT,
        refund_address=HOST,
    )
    signed = _send(
        wallet, wallet.build_eth_transfer(created.payin_address, Decimal("0.1"), nonce=0)
    )
    mempool.post("/_sandbox/mine")
    seen = changenow.get_exchange(created.id)
    assert seen.status == "confirming" and seen.amount_from == Decimal("0.1")

    mempool.post("/_sandbox/reorg", {"depth": 1})
    undone = changenow.get_exchange(created.id)
    assert undone.status == "waiting" and undone.amount_from is None
    assert mempool.state()["deposits"] == []

    mempool.post("/_sandbox/mine")
    deposits = mempool.state()["deposits"]
    assert [(d["tx_hash"], d["exchange_id"]) for d in deposits] == [(signed.hash, created.id)]
    assert changenow.get_exchange(created.id).amount_from == Decimal("0.1")


def test_an_evicted_transaction_is_forgotten_until_it_is_rebroadcast(
    wallet: WalletClient, mempool: Control
) -> None:
    first = _send(wallet, _eth(wallet, 0))
    second = _send(wallet, _eth(wallet, 1))
    answer = mempool.post("/_sandbox/evict", {"hash": first.hash})
    assert answer == {"evicted": [first.hash], "pending": [second.hash]}
    assert wallet.get_transaction(first.hash) is None
    assert wallet.get_nonce(HOST, "pending") == 0  # the hole is the next nonce
    assert mempool.post("/_sandbox/mine")["mined"] == 0  # nonce 1 waits behind the hole
    assert wallet.broadcast(first) == first.hash  # not "already known": it is new again
    assert mempool.post("/_sandbox/mine")["hashes"] == [first.hash, second.hash]
    assert _tx(mempool, first.hash)["dropped"] is None


def test_evicting_all_or_one_senders_transactions(wallet: WalletClient, mempool: Control) -> None:
    sent = [_send(wallet, _eth(wallet, nonce)) for nonce in range(2)]
    assert mempool.post("/_sandbox/evict", {"address": RECIPIENT})["evicted"] == []
    assert mempool.post("/_sandbox/evict")["evicted"] == [s.hash for s in sent]
    assert wallet.get_nonce(HOST, "pending") == 0
    assert (
        "not in the mempool"
        in _control_error(mempool, "/_sandbox/evict", {"hashes": [sent[0].hash]})["message"]
    )


def test_a_raised_base_fee_leaves_a_transaction_stuck_until_it_is_replaced(
    wallet: WalletClient, mempool: Control
) -> None:
    tx = _eth(wallet, 0)  # fee cap 3 gwei
    stuck = _send(wallet, tx)
    behind = _send(
        wallet, _eth(wallet, 1, fees=Fees(max_fee_per_gas=50 * GWEI, max_priority_fee_per_gas=GWEI))
    )
    mempool.config(base_fee_gwei="5")
    answer = mempool.post("/_sandbox/mine", {"count": 3})
    assert answer["mined"] == 0 and len(answer["blocks"]) == 3
    assert wallet.get_receipt(stuck.hash) is None and wallet.get_receipt(behind.hash) is None
    latest = wallet.rpc("eth_getBlockByNumber", ["latest", False])
    assert int(latest["baseFeePerGas"], 16) == 5 * GWEI

    suggested = wallet.suggest_fees()  # 2 x 5 gwei + 1 gwei
    assert suggested.max_fee_per_gas == 11 * GWEI
    bumped = bump_fees(
        tx.max_fee_per_gas, tx.max_priority_fee_per_gas, suggested, ceiling_wei=CEILING
    )
    assert not bumped.capped and bumped.max_fee_per_gas == 11 * GWEI
    replacement = _send(wallet, tx.with_fees(bumped.fees))
    assert mempool.post("/_sandbox/mine")["hashes"] == [replacement.hash, behind.hash]
    receipt = wallet.get_receipt(replacement.hash)
    assert receipt is not None and receipt.effective_gas_price == 5 * GWEI + 1_125_000_000


def test_auto_mining_also_waits_for_the_base_fee(wallet: WalletClient, control: Control) -> None:
    control.config(block_time=60)
    signed = _send(wallet, _eth(wallet, 0))
    control.config(base_fee_gwei="4")
    control.advance(120)
    assert wallet.get_receipt(signed.hash) is None  # due, but its fee cap is under 4 gwei
    control.config(base_fee_gwei="2")
    receipt = wallet.get_receipt(signed.hash)  # any request lets the sandbox mine it
    assert receipt is not None and receipt.succeeded


def test_fee_history_reports_base_fees_with_the_next_one(
    wallet: WalletClient, mempool: Control
) -> None:
    mempool.post("/_sandbox/mine", {"empty_blocks": 2})
    mempool.config(base_fee_gwei="7")
    history = wallet.rpc("eth_feeHistory", ["0x2", "latest", [50]])
    assert history["oldestBlock"] == "0x1"
    assert history["baseFeePerGas"] == [hex(GWEI), hex(GWEI), hex(7 * GWEI)]
    assert history["reward"] == [[hex(GWEI)], [hex(GWEI)]]


def test_control_endpoints_refuse_bad_mining_and_reorg_requests(
    wallet: WalletClient, mempool: Control
) -> None:
    assert "depth" in _control_error(mempool, "/_sandbox/reorg", {"depth": 1})["message"]
    mempool.post("/_sandbox/mine", {"empty_blocks": 2})
    assert "depth" in _control_error(mempool, "/_sandbox/reorg", {"depth": 3})["message"]
    assert "count" in _control_error(mempool, "/_sandbox/mine", {"count": -1})["message"]
    assert "count" in _control_error(mempool, "/_sandbox/mine", {"count": 1.5})["message"]
    unknown = "0x" + "ab" * 32
    assert (
        "not in the mempool"
        in _control_error(mempool, "/_sandbox/mine", {"hashes": [unknown]})["message"]
    )
    assert _control_error(mempool, "/_sandbox/config", {"price_bump_percent": -1})
    assert wallet.get_block_number() == 2
