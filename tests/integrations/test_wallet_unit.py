"""Wallet client at the JSON-RPC seam (responses): error wording of real nodes and signers,
the two eth_signTransaction answer shapes, and a signer that signs something else."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
import responses

from integrations.errors import WalletError, WalletErrorKind
from integrations.wallet.client import Fees, TxRequest, WalletClient, classify_rpc_error
from integrations.wallet.rlp import encode_eip1559, tx_hash

RPC = "https://signer.test/rpc"
HOST = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
TO = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


@pytest.mark.parametrize(
    ("code", "message", "kind"),
    [
        (-32000, "already known", WalletErrorKind.ALREADY_KNOWN),  # geth
        (-32003, "transaction already imported", WalletErrorKind.ALREADY_KNOWN),  # anvil
        (-32010, "AlreadyKnown", WalletErrorKind.ALREADY_KNOWN),  # nethermind
        (-32000, "nonce too low: next nonce 5, tx nonce 3", WalletErrorKind.NONCE_TOO_LOW),
        (-32010, "OldNonce", WalletErrorKind.NONCE_TOO_LOW),
        (-32000, "nonce too high", WalletErrorKind.NONCE_TOO_HIGH),
        (-32003, "Insufficient funds for gas * price + value", WalletErrorKind.INSUFFICIENT_FUNDS),
        (-32010, "InsufficientFunds, Balance is 0", WalletErrorKind.INSUFFICIENT_FUNDS),
        (-32000, "replacement transaction underpriced", WalletErrorKind.UNDERPRICED),
        (-32000, "transaction underpriced", WalletErrorKind.UNDERPRICED),
        (-32003, "max fee per gas less than block base fee", WalletErrorKind.UNDERPRICED),
        (-32010, "FeeTooLow", WalletErrorKind.UNDERPRICED),
        (-32000, "intrinsic gas too low", WalletErrorKind.GAS_TOO_LOW),
        (3, "execution reverted: ERC20: transfer amount exceeds balance", WalletErrorKind.REVERTED),
        # A revert reason is the contract's free text: it never masquerades as a node error.
        (3, "execution reverted: insufficient balance", WalletErrorKind.REVERTED),
        (-32000, "execution reverted: already known", WalletErrorKind.REVERTED),
        (-32602, "No Signer available", WalletErrorKind.SIGNER_UNAVAILABLE),  # anvil
        (-32000, "unknown account", WalletErrorKind.SIGNER_UNAVAILABLE),  # geth
        (-32000, "authentication needed: password or unlock", WalletErrorKind.SIGNER_UNAVAILABLE),
        (-32000, "Request denied", WalletErrorKind.SIGNER_UNAVAILABLE),  # clef
        (-32601, "the method eth_foo does not exist", WalletErrorKind.METHOD_NOT_FOUND),
        (-32602, "invalid argument 0", WalletErrorKind.INVALID_PARAMS),
        (-32603, "something unexpected", WalletErrorKind.RPC_ERROR),
    ],
)
def test_it_classifies_node_and_signer_errors(code: int, message: str, kind: str) -> None:
    assert classify_rpc_error(code, message) == kind


def _rpc_result(result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "result": result}


def _tx(**overrides: Any) -> TxRequest:
    values: dict[str, Any] = {
        "from_address": HOST,
        "to": TO,
        "value": 10**18,
        "data": b"",
        "nonce": 4,
        "gas": 21_000,
        "chain_id": 1,
        "fees": Fees(max_fee_per_gas=30 * 10**9, max_priority_fee_per_gas=10**9),
    }
    values.update(overrides)
    return TxRequest(**values)


def _raw(tx: TxRequest, **changes: Any) -> bytes:
    fields: dict[str, Any] = {
        "chain_id": tx.chain_id,
        "nonce": tx.nonce,
        "max_priority_fee_per_gas": tx.fees.max_priority_fee_per_gas,
        "max_fee_per_gas": tx.fees.max_fee_per_gas,
        "gas": tx.gas,
        "to": tx.to.lower(),
        "value": tx.value,
        "data": tx.data,
        "y_parity": 1,
        "r": 12345,
        "s": 67890,
    }
    fields.update(changes)
    return encode_eip1559(**fields)


@responses.activate
def test_it_accepts_a_raw_hex_signature() -> None:
    tx = _tx()
    raw = _raw(tx)
    responses.post(RPC, json=_rpc_result("0x" + raw.hex()))
    signed = WalletClient(RPC).sign(tx)
    assert signed.raw == "0x" + raw.hex()
    assert signed.hash == tx_hash(raw)
    sent = json.loads(responses.calls[0].request.body)
    assert sent["method"] == "eth_signTransaction"
    assert sent["params"][0] == {
        "from": HOST,
        "to": TO,
        "value": hex(10**18),
        "nonce": "0x4",
        "gas": "0x5208",
        "chainId": "0x1",
        "maxFeePerGas": hex(30 * 10**9),
        "maxPriorityFeePerGas": hex(10**9),
    }


@responses.activate
def test_it_accepts_a_geth_clef_raw_and_tx_signature() -> None:
    tx = _tx()
    raw = _raw(tx)
    responses.post(
        RPC,
        json=_rpc_result({"raw": "0x" + raw.hex(), "tx": {"hash": tx_hash(raw), "nonce": "0x4"}}),
    )
    assert WalletClient(RPC).sign(tx).hash == tx_hash(raw)


@responses.activate
def test_it_rejects_a_geth_answer_whose_hash_is_not_the_raw_bytes_hash() -> None:
    tx = _tx()
    responses.post(
        RPC, json=_rpc_result({"raw": "0x" + _raw(tx).hex(), "tx": {"hash": "0x" + "00" * 32}})
    )
    with pytest.raises(WalletError) as caught:
        WalletClient(RPC).sign(tx)
    assert caught.value.kind == WalletErrorKind.SIGNER_MISMATCH


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"to": "0x" + "11" * 20}, "to"),
        ({"value": 10**18 + 1}, "value"),
        ({"nonce": 5}, "nonce"),
        ({"chain_id": 5}, "chain"),
        ({"data": b"\x01"}, "call data"),
        ({"max_fee_per_gas": 31 * 10**9}, "gas price"),
    ],
)
@responses.activate
def test_it_refuses_bytes_that_are_not_the_transaction_it_asked_for(
    change: dict[str, Any], problem: str
) -> None:
    tx = _tx()
    responses.post(RPC, json=_rpc_result("0x" + _raw(tx, **change).hex()))
    with pytest.raises(WalletError, match=problem) as caught:
        WalletClient(RPC).sign(tx)
    assert caught.value.kind == WalletErrorKind.SIGNER_MISMATCH and caught.value.permanent


@responses.activate
def test_it_refuses_a_legacy_signature_without_replay_protection() -> None:
    from integrations.wallet.rlp import encode, int_to_bytes

    tx = _tx(fees=Fees(gas_price=10**9))
    pre_eip155 = encode(
        [int_to_bytes(tx.nonce), int_to_bytes(10**9), int_to_bytes(tx.gas),
         bytes.fromhex(TO[2:]), int_to_bytes(tx.value), b"", int_to_bytes(27),
         int_to_bytes(1), int_to_bytes(2)]
    )  # fmt: skip
    responses.post(RPC, json=_rpc_result("0x" + pre_eip155.hex()))
    with pytest.raises(WalletError, match="replayed") as caught:
        WalletClient(RPC).sign(tx)
    assert caught.value.kind == WalletErrorKind.SIGNER_MISMATCH


@responses.activate
def test_it_treats_nonce_too_low_as_success_only_when_the_node_has_our_transaction() -> None:
    raw = "0x" + _raw(_tx()).hex()
    nonce_too_low = {"jsonrpc": "2.0", "id": 1,
                     "error": {"code": -32000, "message": "nonce too low"}}  # fmt: skip
    responses.post(RPC, json=nonce_too_low)
    responses.post(
        RPC,
        json={"jsonrpc": "2.0", "id": 2, "error": {"code": -32601, "message": "method not found"}},
    )
    responses.post(RPC, json=_rpc_result({"blockNumber": "0x10", "status": "0x1"}))
    assert WalletClient(RPC).broadcast(raw) == tx_hash(bytes.fromhex(raw[2:]))
    responses.reset()
    responses.post(RPC, json=nonce_too_low)
    responses.post(RPC, json=_rpc_result(None))
    responses.post(RPC, json=_rpc_result(None))
    with pytest.raises(WalletError) as caught:
        WalletClient(RPC).broadcast(raw)
    assert caught.value.kind == WalletErrorKind.NONCE_TOO_LOW


@responses.activate
def test_it_rejects_garbage_from_the_signer() -> None:
    responses.post(RPC, json=_rpc_result("0xzz"))
    with pytest.raises(WalletError) as caught:
        WalletClient(RPC).sign(_tx())
    assert caught.value.kind == WalletErrorKind.BAD_RESPONSE
    responses.replace(responses.POST, RPC, json=_rpc_result("0x02c0"))
    with pytest.raises(WalletError, match="does not decode"):
        WalletClient(RPC).sign(_tx())
    responses.replace(responses.POST, RPC, body="<html>proxy</html>")
    with pytest.raises(WalletError) as caught:
        WalletClient(RPC).chain_id()
    assert caught.value.kind == WalletErrorKind.BAD_RESPONSE


@responses.activate
def test_it_maps_http_failures_of_the_signer() -> None:
    responses.post(RPC, status=429, headers={"Retry-After": "4"}, body="slow down")
    with pytest.raises(WalletError) as caught:
        WalletClient(RPC).chain_id()
    assert caught.value.kind == WalletErrorKind.RATE_LIMITED and caught.value.retry_after == 4
    responses.replace(responses.POST, RPC, status=401, body="no")
    with pytest.raises(WalletError) as caught:
        WalletClient(RPC).chain_id()
    assert caught.value.kind == WalletErrorKind.SIGNER_UNAVAILABLE and caught.value.permanent
    responses.replace(responses.POST, RPC, status=503, body="down")
    with pytest.raises(WalletError) as caught:
        WalletClient(RPC).chain_id()
    assert caught.value.kind == WalletErrorKind.SERVER_ERROR and caught.value.transient


@responses.activate
def test_it_never_retries_json_rpc_posts_itself() -> None:
    responses.post(RPC, status=503, body="down")
    with pytest.raises(WalletError):
        WalletClient(RPC).send_raw("0x00")
    assert len(responses.calls) == 1


@responses.activate
def test_it_falls_back_to_gas_price_without_a_base_fee_and_default_tip_without_the_method() -> None:
    responses.post(RPC, json=_rpc_result({"number": "0x1"}))
    responses.post(RPC, json=_rpc_result("0x3b9aca00"))
    assert WalletClient(RPC).suggest_fees() == Fees(gas_price=10**9)
    responses.reset()
    responses.post(RPC, json=_rpc_result({"number": "0x1", "baseFeePerGas": "0x64"}))
    responses.post(
        RPC,
        json={"jsonrpc": "2.0", "id": 2, "error": {"code": -32601, "message": "method not found"}},
    )
    fees = WalletClient(RPC).suggest_fees()
    assert fees.max_priority_fee_per_gas == 10**9 and fees.max_fee_per_gas == 200 + 10**9


def test_fees_are_either_eip1559_or_legacy() -> None:
    with pytest.raises(ValueError):
        Fees()
    with pytest.raises(ValueError):
        Fees(gas_price=1, max_fee_per_gas=2, max_priority_fee_per_gas=1)
    with pytest.raises(ValueError):
        Fees(max_fee_per_gas=1, max_priority_fee_per_gas=2)
    assert Fees(gas_price=7).max_price == 7


def test_it_requires_decimal_amounts_and_a_valid_nonce() -> None:
    client = WalletClient(RPC, host_address=HOST)
    with pytest.raises(TypeError):
        client.build_eth_transfer(TO, 1, nonce=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nonce"):
        client.build_eth_transfer(
            TO, Decimal("1"), nonce=-1, gas=21_000, fees=Fees(gas_price=1), check_balance=False
        )
    with pytest.raises(ValueError, match="not an Ethereum address"):
        client.build_eth_transfer("0x123", Decimal("1"), nonce=0)
