"""ERC-20 call data and RLP against known encodings."""

from __future__ import annotations

import pytest

from integrations.wallet import abi, rlp

CLIENT = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def test_it_uses_the_well_known_erc20_selectors() -> None:
    assert abi.TRANSFER_SELECTOR.hex() == "a9059cbb"
    assert abi.BALANCE_OF_SELECTOR.hex() == "70a08231"
    assert abi.DECIMALS_SELECTOR.hex() == "313ce567"


def test_it_encodes_a_transfer_exactly_as_the_abi_specifies() -> None:
    data = abi.encode_transfer(CLIENT, 1_000_000)  # 1 USDT
    assert data.hex() == (
        "a9059cbb"
        "0000000000000000000000005aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
        "00000000000000000000000000000000000000000000000000000000000f4240"
    )
    big = abi.encode_transfer(CLIENT, 2**256 - 1)
    assert big[-32:] == b"\xff" * 32 and len(big) == 68


def test_it_decodes_only_real_transfer_calls() -> None:
    data = abi.encode_transfer(CLIENT.lower(), 123)
    assert abi.decode_transfer(data) == (CLIENT, 123)
    assert abi.decode_transfer(abi.encode_balance_of(CLIENT)) is None
    assert abi.decode_transfer(data[:-1]) is None
    assert abi.decode_transfer(b"\x00" * 68) is None


@pytest.mark.parametrize("units", [0, -1, 2**256])
def test_it_rejects_out_of_range_token_amounts(units: int) -> None:
    with pytest.raises(ValueError):
        abi.encode_transfer(CLIENT, units)


def test_it_rejects_non_integer_amounts_and_bad_addresses() -> None:
    with pytest.raises(TypeError):
        abi.encode_transfer(CLIENT, True)
    with pytest.raises(TypeError):
        abi.encode_transfer(CLIENT, 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        abi.encode_transfer("0x1234", 1)


def test_it_encodes_balance_of() -> None:
    assert abi.encode_balance_of(CLIENT).hex() == (
        "70a082310000000000000000000000005aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
    )
    assert abi.decode_uint256((7).to_bytes(32, "big")) == 7
    with pytest.raises(ValueError):
        abi.decode_uint256(b"\x07")


@pytest.mark.parametrize(
    ("item", "encoded"),
    [
        (b"dog", "83646f67"),
        ([b"cat", b"dog"], "c88363617483646f67"),
        (b"", "80"),
        ([], "c0"),
        (b"\x00", "00"),
        (b"\x0f", "0f"),
        (b"\x04\x00", "820400"),
        ([[], [[]], [[], [[]]]], "c7c0c1c0c3c0c1c0"),
        (
            b"Lorem ipsum dolor sit amet, consectetur adipisicing elit",
            "b838" + b"Lorem ipsum dolor sit amet, consectetur adipisicing elit".hex(),
        ),
    ],
)
def test_rlp_matches_the_yellow_paper_vectors(item: rlp.RlpItem, encoded: str) -> None:
    assert rlp.encode(item).hex() == encoded
    assert rlp.decode(bytes.fromhex(encoded)) == item


def test_rlp_refuses_truncated_or_padded_input() -> None:
    with pytest.raises(ValueError):
        rlp.decode(bytes.fromhex("83646f"))
    with pytest.raises(ValueError):
        rlp.decode(bytes.fromhex("83646f6700"))


def test_it_decodes_a_transaction_signed_by_anvil() -> None:
    # eth_signTransaction answer of anvil 1.7 (account 0 -> account 1, 1 wei, chain 31337).
    raw = bytes.fromhex(
        "02f86c827a6980843b9aca0084773594008252089470997970c51812dc3a010c7d01b50e0d17dc79c801"
        "80c080a07ca003a6a2adcce9641e808dcecdedf7c37ca5f48c326a17e25406471de8d1eea053a15f6568"
        "f6cf8ccf47cb2f77585c4b71ba3a579bfcc82de7a528889b92a705"
    )
    tx = rlp.decode_transaction(raw)
    assert tx.hash == "0xa23b52004fe574000765fbe20a311b2785a318c9dbe6b0bf6a4c1f8936f57ff3"
    assert (tx.type, tx.chain_id, tx.nonce, tx.gas, tx.value) == (2, 31337, 0, 21000, 1)
    assert tx.to == "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"
    assert (tx.max_fee_per_gas, tx.max_priority_fee_per_gas) == (2 * 10**9, 10**9)


def test_it_decodes_a_legacy_eip155_transaction_signed_by_anvil() -> None:
    raw = bytes.fromhex(
        "f8650184773594008252089470997970c51812dc3a010c7d01b50e0d17dc79c8018082f4f6a03ece4576"
        "4be49a6044a66f89aafd9978f41ea4b2017271d2dbfe997e7250af2ea04423fb36e82c6d9c94be1c4cdf"
        "8c38c867dd147521fcad5c6872562af90919a3"
    )
    tx = rlp.decode_transaction(raw)
    assert (tx.type, tx.chain_id, tx.nonce, tx.gas_price) == (0, 31337, 1, 2 * 10**9)


def test_it_round_trips_the_envelopes_it_builds() -> None:
    raw = rlp.encode_eip1559(
        chain_id=1,
        nonce=9,
        max_priority_fee_per_gas=2,
        max_fee_per_gas=3,
        gas=60_000,
        to=CLIENT.lower(),
        value=0,
        data=abi.encode_transfer(CLIENT, 5),
        y_parity=1,
        r=1,
        s=2,
    )
    tx = rlp.decode_transaction(raw)
    assert (tx.nonce, tx.gas, tx.to, tx.value) == (9, 60_000, CLIENT.lower(), 0)
    assert abi.decode_transfer(tx.data) == (CLIENT, 5)
    with pytest.raises(ValueError, match="unsupported transaction type"):
        rlp.decode_transaction(b"\x01\xc0")
