"""Property tests for the hand-written codecs, and the clients' from_settings wiring."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from integrations.addresses import b58decode, b58encode, xmr_b58decode, xmr_b58encode
from integrations.changenow.client import ChangeNowClient
from integrations.nowpayments.ipn import canonical_json, sign_ipn, verify_ipn
from integrations.wallet import rlp
from integrations.wallet.client import WalletClient

rlp_items = st.recursive(
    st.binary(max_size=80), lambda children: st.lists(children, max_size=6), max_leaves=20
)


@given(rlp_items)
def test_rlp_decodes_what_it_encodes(item: rlp.RlpItem) -> None:
    assert rlp.decode(rlp.encode(item)) == item


@given(st.binary(max_size=64))
def test_base58_round_trips_including_leading_zeros(data: bytes) -> None:
    assert b58decode(b58encode(data)) == data


@given(st.binary(min_size=1, max_size=69))
def test_monero_base58_round_trips(data: bytes) -> None:
    assert xmr_b58decode(xmr_b58encode(data)) == data


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    # Within the intake's number limit (WEBHOOK_MAX_NUMBER_CHARS = 64): longer numbers are
    # refused by design, which its own tests check; this one is about key order.
    st.decimals(
        min_value=-(10**40), max_value=10**40, allow_nan=False, allow_infinity=False, places=8
    ),
    st.text(max_size=12),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=15,
)


@settings(max_examples=60)
@given(st.dictionaries(st.text(max_size=8), json_values, min_size=1, max_size=6), st.randoms())
def test_an_ipn_verifies_whatever_order_its_keys_arrive_in(
    payload: dict[str, object], rnd: random.Random
) -> None:
    body, signature = sign_ipn(payload, "s3cret")
    # Each member as the exact text the signer wrote ('"key":value'), then shuffled.
    members = [sign_ipn({key: value}, "x")[0].decode()[1:-1] for key, value in payload.items()]
    rnd.shuffle(members)
    shuffled = "{" + ",".join(members) + "}"
    verified = verify_ipn(shuffled.encode(), signature, "s3cret")
    assert set(verified) == set(payload)
    assert canonical_json(canonical_json(body)) == canonical_json(body)


def test_clients_are_built_from_settings(settings: Any) -> None:  # pytest-django fixture
    settings.CHANGENOW_API_URL = "http://cn.example:8000"
    settings.CHANGENOW_API_KEY = "abc"
    settings.WALLET_RPC_URL = "http://signer.example:8545/rpc"
    settings.HOST_WALLET_ADDRESS = "0xf39fd6e51aad88f6f4ce6ab8827279cfffb92266"
    settings.USDT_CONTRACT_ADDRESS = "0xdac17f958d2ee523a2206206994597c13d831ec7"
    changenow = ChangeNowClient.from_settings()
    assert changenow.http.url("/v2/exchange") == "http://cn.example:8000/v2/exchange"
    assert changenow.http.session.headers["x-changenow-api-key"] == "abc"
    wallet = WalletClient.from_settings(expected_chain_id=1)
    assert wallet.rpc_url == "http://signer.example:8545/rpc"
    assert wallet.host_address == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    assert wallet.usdt_contract == "0xdAC17F958D2ee523a2206206994597C13D831ec7"
    assert wallet.expected_chain_id == 1


def test_decimal_payload_numbers_survive_signing_exactly() -> None:
    body, signature = sign_ipn({"outcome_amount": Decimal("0.000000010000")}, "k")
    assert b"0.000000010000" in body
    assert verify_ipn(body, signature, "k")["outcome_amount"] == Decimal("1E-8")
