"""ERC-20 call data, ABI-encoded by us (eth-abi): transfer, balanceOf, decimals."""

from __future__ import annotations

from eth_abi import decode, encode
from eth_utils import function_signature_to_4byte_selector, is_address, to_checksum_address

TRANSFER_SELECTOR = function_signature_to_4byte_selector("transfer(address,uint256)")
BALANCE_OF_SELECTOR = function_signature_to_4byte_selector("balanceOf(address)")
DECIMALS_SELECTOR = function_signature_to_4byte_selector("decimals()")
UINT256_MAX = 2**256 - 1


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
