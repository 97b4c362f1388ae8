"""Pure pieces of replacement and finality: fee bumps, the ERC-20 Transfer log check, and
re-building a request from stored signed bytes."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from integrations.wallet import abi
from integrations.wallet.client import (
    Fees,
    Receipt,
    TxRequest,
    WalletClient,
    bump_fees,
    erc20_transfer_logged,
)
from integrations.wallet.rlp import encode_eip1559, encode_legacy

GWEI = 10**9
TOKEN = "0xdAC17F958D2ee523a2206206994597C13D831ec7"
OTHER_TOKEN = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"
HOST = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
TO = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


# -- bump_fees -----------------------------------------------------------------------------


def test_it_raises_both_caps_by_12_5_percent_rounded_up_to_the_wei() -> None:
    bumped = bump_fees(3 * GWEI, GWEI, None, ceiling_wei=200 * GWEI)
    assert bumped == (3_375_000_000, 1_125_000_000, False)
    odd = bump_fees(1_000_000_001, 7, None, ceiling_wei=200 * GWEI)
    # 1_000_000_001 x 1.125 = 1_125_000_001.125 and 7 x 1.125 = 7.875: both round up.
    assert (odd.max_fee_per_gas, odd.max_priority_fee_per_gas) == (1_125_000_002, 8)


def test_it_takes_the_nodes_suggestion_when_it_is_higher() -> None:
    suggested = Fees(max_fee_per_gas=11 * GWEI, max_priority_fee_per_gas=GWEI)
    bumped = bump_fees(3 * GWEI, GWEI, suggested, ceiling_wei=200 * GWEI)
    # The fee cap follows the suggestion; the tip still needs its own 12.5 %.
    assert bumped == (11 * GWEI, 1_125_000_000, False)
    legacy = bump_fees(3 * GWEI, GWEI, Fees(gas_price=5 * GWEI), ceiling_wei=200 * GWEI)
    assert legacy == (5 * GWEI, 5 * GWEI, False)  # a legacy price counts for both caps


def test_it_raises_a_zero_tip_to_at_least_one_wei() -> None:
    # Nodes want strictly higher caps: 0 x 1.125 is still 0.
    assert bump_fees(10, 0, None, ceiling_wei=10**18)[:2] == (12, 1)


def test_it_never_goes_above_the_ceiling_and_says_so() -> None:
    bumped = bump_fees(190 * GWEI, 2 * GWEI, None, ceiling_wei=200 * GWEI)
    assert bumped == (200 * GWEI, 2_250_000_000, True)
    huge_tip = bump_fees(3 * GWEI, 3 * GWEI, Fees(gas_price=500 * GWEI), ceiling_wei=200 * GWEI)
    assert huge_tip == (200 * GWEI, 200 * GWEI, True)  # the tip is cut to the cap too
    at_ceiling = bump_fees(200 * GWEI, GWEI, None, ceiling_wei=200 * GWEI)
    assert at_ceiling.capped and at_ceiling.max_fee_per_gas == 200 * GWEI
    # 100 x 1.125 = 112.5, so 113 is wanted: a ceiling of 113 fits, 112 bites.
    assert bump_fees(100, 10, None, ceiling_wei=113) == (113, 12, False)
    assert bump_fees(100, 10, None, ceiling_wei=112) == (112, 12, True)


def test_it_accepts_other_percentages_and_refuses_nonsense() -> None:
    assert bump_fees(1000, 100, None, percent=10, ceiling_wei=10**6)[:2] == (1100, 110)
    assert bump_fees(1000, 100, None, percent="25", ceiling_wei=10**6)[:2] == (1250, 125)
    for bad in (
        {"old_max_fee": -1, "old_tip": 0},
        {"old_max_fee": 1.5, "old_tip": 0},
        {"old_max_fee": 1, "old_tip": 2},  # a tip above the cap was never valid
    ):
        with pytest.raises(ValueError):
            bump_fees(bad["old_max_fee"], bad["old_tip"], None, ceiling_wei=10**9)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        bump_fees(10, 1, None, percent=0, ceiling_wei=10**9)
    with pytest.raises(ValueError, match="number"):
        bump_fees(10, 1, None, percent="a lot", ceiling_wei=10**9)


@given(
    old_fee=st.integers(min_value=1, max_value=10**12),
    tip_share=st.integers(min_value=0, max_value=100),
    ceiling=st.integers(min_value=1, max_value=2 * 10**12),
)
def test_a_bump_is_a_valid_replacement_unless_capped(
    old_fee: int, tip_share: int, ceiling: int
) -> None:
    old_tip = old_fee * tip_share // 100
    fee, tip, capped = bump_fees(old_fee, old_tip, None, ceiling_wei=ceiling)
    assert tip <= fee <= ceiling
    if not capped:
        # What geth (10 %) and the design (12.5 %) ask, with nothing rounded down.
        assert fee * 1000 >= old_fee * 1125 and fee > old_fee
        assert tip * 1000 >= old_tip * 1125 and tip > old_tip


# -- the Transfer log ----------------------------------------------------------------------


def _topic(address: str) -> str:
    return "0x" + "00" * 12 + address.lower()[2:]


def _log(token: str = TOKEN, sender: str = HOST, to: str = TO, units: int = 25_000_000) -> Any:
    return {
        "address": token,
        "topics": [abi.TRANSFER_TOPIC, _topic(sender), _topic(to)],
        "data": "0x" + units.to_bytes(32, "big").hex(),
        "logIndex": "0x0",
        "removed": False,
    }


def _receipt(logs: list[Any], status: int | None = 1) -> Receipt:
    return Receipt(
        tx_hash="0x" + "11" * 32,
        status=status,
        block_number=10,
        block_hash="0x" + "22" * 32,
        gas_used=45_000,
        effective_gas_price=2 * GWEI,
        from_address=HOST,
        to=TOKEN,
        logs=logs,
        raw={},
    )


def test_it_finds_the_transfer_log_of_the_token_contract() -> None:
    receipt = _receipt([_log()])
    assert erc20_transfer_logged(receipt, TOKEN, HOST, TO, 25_000_000)
    assert erc20_transfer_logged(
        receipt, TOKEN.lower(), HOST.lower(), "0x" + TO[2:].upper(), 25_000_000
    )
    assert receipt.fee_wei == 90_000 * GWEI


def test_status_one_without_a_transfer_log_is_not_a_transfer() -> None:
    assert not erc20_transfer_logged(_receipt([]), TOKEN, HOST, TO, 25_000_000)


def test_a_transfer_log_from_another_contract_does_not_count() -> None:
    receipt = _receipt([_log(token=OTHER_TOKEN)])
    assert not erc20_transfer_logged(receipt, TOKEN, HOST, TO, 25_000_000)


@pytest.mark.parametrize(
    "log",
    [
        _log(units=25_000_001),  # another amount
        _log(to=HOST),  # another recipient
        _log(sender=TO),  # from someone else
        {**_log(), "topics": _log()["topics"] + [_topic(TO)]},  # ERC-721 shape: 4 topics
        {**_log(), "topics": ["0x" + "ab" * 32, *_log()["topics"][1:]]},  # another event
        {**_log(), "removed": True},  # taken back by a reorg
        {**_log(), "topics": [abi.TRANSFER_TOPIC, "0x" + "ff" * 32, _topic(TO)]},  # not an address
        {**_log(), "data": "0x1234"},  # garbled value
    ],
)
def test_a_log_that_is_not_this_transfer_does_not_count(log: Any) -> None:
    assert not erc20_transfer_logged(_receipt([log]), TOKEN, HOST, TO, 25_000_000)


def test_a_reverted_receipt_never_counts_even_with_a_log() -> None:
    assert not erc20_transfer_logged(_receipt([_log()], status=0), TOKEN, HOST, TO, 25_000_000)


def test_the_right_log_among_others_counts() -> None:
    receipt = _receipt([_log(token=OTHER_TOKEN), _log(units=1), _log()])
    assert erc20_transfer_logged(receipt, TOKEN, HOST, TO, 25_000_000)


def test_confirmations_count_the_receipts_block_itself() -> None:
    receipt = _receipt([])
    assert receipt.confirmations(10) == 1 and receipt.confirmations(21) == 12
    assert receipt.confirmations(8) == 0  # the chain is shorter now: a reorg


# -- requests: explicit fees, cancels, from stored bytes -----------------------------------


def test_builds_take_explicit_eip1559_fees_but_not_twice() -> None:
    client = WalletClient("https://signer.test/rpc", host_address=HOST)
    client._chain_id = 1  # no node in these tests
    tx = client.build_eth_transfer(
        TO,
        Decimal("1"),
        nonce=4,
        gas=21_000,
        check_balance=False,
        max_fee_per_gas=30 * GWEI,
        max_priority_fee_per_gas=2 * GWEI,
    )
    assert (tx.max_fee_per_gas, tx.max_priority_fee_per_gas, tx.gas_price) == (
        30 * GWEI,
        2 * GWEI,
        None,
    )
    assert tx.to_rpc()["maxFeePerGas"] == hex(30 * GWEI)
    with pytest.raises(ValueError, match="not both"):
        client.build_erc20_transfer(
            TO,
            Decimal("1"),
            nonce=4,
            token=TOKEN,
            gas=60_000,
            check_balance=False,
            fees=Fees(gas_price=GWEI),
            max_fee_per_gas=GWEI,
            max_priority_fee_per_gas=GWEI,
        )
    with pytest.raises(ValueError, match="both"):
        client.build_cancel(nonce=4, max_fee_per_gas=GWEI, check_balance=False)
    cancel = client.build_cancel(
        nonce=4, max_fee_per_gas=3 * GWEI, max_priority_fee_per_gas=GWEI, check_balance=False
    )
    assert cancel.is_cancel and cancel.to == HOST and cancel.nonce == 4 and cancel.data == b""
    raised = tx.with_fees(Fees(max_fee_per_gas=40 * GWEI, max_priority_fee_per_gas=3 * GWEI))
    assert raised.nonce == tx.nonce and raised.value == tx.value and raised.gas == tx.gas
    assert raised.max_fee_per_gas == 40 * GWEI and not raised.is_cancel


def test_fees_must_be_whole_wei() -> None:
    with pytest.raises(ValueError, match="integer"):
        Fees(max_fee_per_gas=1.5, max_priority_fee_per_gas=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="integer"):
        Fees(gas_price=-1)
    assert Fees(gas_price=5).tip == 5
    assert Fees(max_fee_per_gas=5, max_priority_fee_per_gas=2).tip == 2


def test_it_rebuilds_the_request_behind_stored_signed_bytes() -> None:
    data = abi.encode_transfer(TO, 25_000_000)
    raw = encode_eip1559(
        chain_id=1337,
        nonce=9,
        max_priority_fee_per_gas=GWEI,
        max_fee_per_gas=3 * GWEI,
        gas=65_000,
        to=TOKEN,
        value=0,
        data=data,
        y_parity=0,
        r=1,
        s=1,
    )
    tx = TxRequest.from_signed("0x" + raw.hex(), HOST)
    assert (tx.nonce, tx.gas, tx.chain_id, tx.to, tx.data) == (9, 65_000, 1337, TOKEN, data)
    assert (tx.asset, tx.units, tx.recipient) == ("usdt", 25_000_000, TO)
    assert tx.fees == Fees(max_fee_per_gas=3 * GWEI, max_priority_fee_per_gas=GWEI)
    legacy = encode_legacy(
        chain_id=1, nonce=0, gas_price=5, gas=21_000, to=TO, value=7, data=b"", recovery=0, r=1, s=1
    )
    eth = TxRequest.from_signed(legacy, HOST)
    assert (eth.asset, eth.units, eth.fees) == ("eth", 7, Fees(gas_price=5))
