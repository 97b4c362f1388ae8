"""ERC-20 call data, ABI-encoded by us (eth-abi): transfer, balanceOf, decimals; and the
``Transfer`` event log, decoded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from eth_abi import decode, encode
from eth_utils import (
    event_signature_to_log_topic,
    function_signature_to_4byte_selector,
    is_address,
    to_checksum_address,
)

TRANSFER_SELECTOR = function_signature_to_4byte_selector("transfer(address,uint256)")
BALANCE_OF_SELECTOR = function_signature_to_4byte_selector("balanceOf(address)")
DECIMALS_SELECTOR = function_signature_to_4byte_selector("decimals()")
UINT256_MAX = 2**256 - 1
# topic0 of ERC-20 Transfer(address indexed from, address indexed to, uint256 value)
TRANSFER_TOPIC = "0x" + event_signature_to_log_topic("Transfer(address,address,uint256)").hex()


def _checked_address(address: str) -> str:
    if not isinstance(address, str) or not is_address(address):
        raise ValueError(f"not an Ethereum address: {address!r}")
    return to_checksum_address(address)


def encode_transfer(to: str, units: int) -> bytes:
    """Call data of ``transfer(to, units)``; ``units`` in the token's base units."""
    if isinstance(units, bool) or not isinstance(units, int):
        raise TypeError("token amounts are integer base units")
    if not 0 < units <= UINT256_MAX:
        raise ValueError(f"token amount {units} is out of range")
    return TRANSFER_SELECTOR + encode(["address", "uint256"], [_checked_address(to), units])


def decode_transfer(data: bytes) -> tuple[str, int] | None:
    """(recipient, units) if ``data`` is an ERC-20 transfer call, else None."""
    if len(data) != 4 + 64 or data[:4] != TRANSFER_SELECTOR:
        return None
    try:
        to, units = decode(["address", "uint256"], data[4:])
    except Exception:  # noqa: BLE001 - malformed call data is simply "not a transfer"
        return None
    return to_checksum_address(to), int(units)


def encode_balance_of(owner: str) -> bytes:
    return BALANCE_OF_SELECTOR + encode(["address"], [_checked_address(owner)])


def decode_uint256(data: bytes) -> int:
    if len(data) != 32:
        raise ValueError(f"expected a 32-byte uint256, got {len(data)} bytes")
    return int.from_bytes(data, "big")


def _word(value: Any) -> bytes | None:
    """A 0x-hex 32-byte word (a log topic or data), or None."""
    if not isinstance(value, str) or not value.startswith("0x") or len(value) != 66:
        return None
    try:
        return bytes.fromhex(value[2:])
    except ValueError:
        return None


def decode_transfer_log(log: Mapping[str, Any]) -> tuple[str, str, str, int] | None:
    """(token, from, to, value), addresses lowercase, if ``log`` is an ERC-20 Transfer.

    ERC-20 indexes from and to (three topics) and puts the value in the data; ERC-721's
    Transfer has the same topic0 but four topics, so it is not taken for one. A log a
    reorg removed (``removed: true``) counts as no log.
    """
    if not isinstance(log, Mapping) or log.get("removed") is True:
        return None
    topics = log.get("topics")
    token = log.get("address")
    if not isinstance(topics, list | tuple) or len(topics) != 3 or not is_address(token):
        return None
    if not isinstance(topics[0], str) or topics[0].lower() != TRANSFER_TOPIC:
        return None
    sender, recipient, data = _word(topics[1]), _word(topics[2]), _word(log.get("data"))
    if sender is None or recipient is None or data is None:
        return None
    if any(sender[:12]) or any(recipient[:12]):
        return None  # an address topic is 12 zero bytes then 20 address bytes
    return (
        str(token).lower(),
        "0x" + sender[12:].hex(),
        "0x" + recipient[12:].hex(),
        int.from_bytes(data, "big"),
    )
