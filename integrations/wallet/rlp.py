"""Ethereum transaction envelopes (legacy and EIP-1559) over the `rlp` codec.

Used twice: the wallet client decodes what the signer signed and checks it is exactly the
transfer it asked for (a signer that altered recipient, amount or nonce is caught before
broadcast), and the sandbox signer produces well-formed raw transactions. No signature
maths here: the app never holds a key and never recovers senders.
"""

from __future__ import annotations

from dataclasses import dataclass

import rlp
from eth_utils import keccak

RlpItem = bytes | list["RlpItem"]


def encode(item: RlpItem) -> bytes:
    return rlp.encode(item)


def decode(data: bytes) -> RlpItem:
    """Strict decoding (trailing or non-canonical bytes refused), as ValueError."""
    try:
        return rlp.decode(data, strict=True)
    except rlp.exceptions.DecodingError as exc:
        raise ValueError(f"invalid RLP: {exc}") from None


def int_to_bytes(value: int) -> bytes:
    if value < 0:
        raise ValueError("RLP integers are unsigned")
    return value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""


def bytes_to_int(value: RlpItem) -> int:
    if not isinstance(value, bytes):
        raise ValueError("expected an RLP string for an integer")
    if value[:1] == b"\x00":
        raise ValueError("RLP integer with leading zero")
    return int.from_bytes(value, "big")


@dataclass(frozen=True)
class DecodedTx:
    """The fields of a signed transaction that matter for a transfer."""

    type: int  # 0 legacy, 2 EIP-1559
    chain_id: int | None
    nonce: int
    gas: int
    to: str | None  # 0x-lowercase hex, None for contract creation
    value: int
    data: bytes
    gas_price: int | None
    max_fee_per_gas: int | None
    max_priority_fee_per_gas: int | None
    hash: str


def tx_hash(raw: bytes) -> str:
    return "0x" + keccak(raw).hex()


def decode_transaction(raw: bytes) -> DecodedTx:
    """Decode a signed legacy (EIP-155) or EIP-1559 transaction."""
    if not raw:
        raise ValueError("empty transaction")
    if raw[0] == 0x02:
        fields = decode(raw[1:])
        if not isinstance(fields, list) or len(fields) != 12:
            raise ValueError("EIP-1559 transaction must have 12 fields")
        chain_id, nonce, tip, max_fee, gas, to, value, data = fields[:8]
        return DecodedTx(
            type=2,
            chain_id=bytes_to_int(chain_id),
            nonce=bytes_to_int(nonce),
            gas=bytes_to_int(gas),
            to=_address(to),
            value=bytes_to_int(value),
            data=_bytes(data),
            gas_price=None,
            max_fee_per_gas=bytes_to_int(max_fee),
            max_priority_fee_per_gas=bytes_to_int(tip),
            hash=tx_hash(raw),
        )
    if raw[0] < 0xC0:
        raise ValueError(f"unsupported transaction type 0x{raw[0]:02x}")
    fields = decode(raw)
    if not isinstance(fields, list) or len(fields) != 9:
        raise ValueError("legacy transaction must have 9 fields")
    nonce, gas_price, gas, to, value, data, v = fields[:7]
    v_int = bytes_to_int(v)
    chain_id = (v_int - 35) // 2 if v_int >= 35 else None
    return DecodedTx(
        type=0,
        chain_id=chain_id,
        nonce=bytes_to_int(nonce),
        gas=bytes_to_int(gas),
        to=_address(to),
        value=bytes_to_int(value),
        data=_bytes(data),
        gas_price=bytes_to_int(gas_price),
        max_fee_per_gas=None,
        max_priority_fee_per_gas=None,
        hash=tx_hash(raw),
    )


def encode_eip1559(
    *,
    chain_id: int,
    nonce: int,
    max_priority_fee_per_gas: int,
    max_fee_per_gas: int,
    gas: int,
    to: str | None,
    value: int,
    data: bytes,
    y_parity: int,
    r: int,
    s: int,
) -> bytes:
    return b"\x02" + encode(
        [
            int_to_bytes(chain_id),
            int_to_bytes(nonce),
            int_to_bytes(max_priority_fee_per_gas),
            int_to_bytes(max_fee_per_gas),
            int_to_bytes(gas),
            bytes.fromhex(to[2:]) if to else b"",
            int_to_bytes(value),
            data,
            [],
            int_to_bytes(y_parity),
            int_to_bytes(r),
            int_to_bytes(s),
        ]
    )


def encode_legacy(
    *,
    chain_id: int,
    nonce: int,
    gas_price: int,
    gas: int,
    to: str | None,
    value: int,
    data: bytes,
    recovery: int,
    r: int,
    s: int,
) -> bytes:
    return encode(
        [
            int_to_bytes(nonce),
            int_to_bytes(gas_price),
            int_to_bytes(gas),
            bytes.fromhex(to[2:]) if to else b"",
            int_to_bytes(value),
            data,
            int_to_bytes(chain_id * 2 + 35 + recovery),
            int_to_bytes(r),
            int_to_bytes(s),
        ]
    )


def _address(value: RlpItem) -> str | None:
    if not isinstance(value, bytes):
        raise ValueError("address field is not a string")
    if value == b"":
        return None
    if len(value) != 20:
        raise ValueError("address field is not 20 bytes")
    return "0x" + value.hex()


def _bytes(value: RlpItem) -> bytes:
    if not isinstance(value, bytes):
        raise ValueError("expected an RLP string")
    return value
