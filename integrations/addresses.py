"""Payout address validation per network, with checksums wherever the format has one.

``validate_address(network, address, extra_id=None, *, fallback=None)`` returns None or
raises ``AddressError`` with a message an operator can act on. The client CSV import calls
it for every line, so its signature is a contract.

Rules (mainnet only: a testnet address in a payout is always a mistake):
- Ethereum family (eth, bsc, matic, arbitrum, op, base, avaxc, ...): ``0x`` + 40 hex.
  Mixed case must pass the EIP-55 checksum. All-lowercase and all-uppercase are accepted as
  *unchecksummed* (EIP-55 defines them so, and many exchanges display addresses lowercased);
  ``normalize_address`` returns the checksummed form to store.
- btc: base58check P2PKH (1...) / P2SH (3...), bech32 v0 (bc1q...) and bech32m v1+
  (bc1p...), per BIP-173/350, checksums verified.
- ltc: base58check L.../M.../3..., bech32 ``ltc1``. doge: base58check D.../A.../9...
- trx: base58check, 21 bytes starting 0x41 (T...).
- xmr: Monero base58 (8-byte blocks), standard and subaddresses 95 chars, integrated 106,
  network byte and Keccak-256 checksum verified.
- sol: base58 of exactly 32 bytes.
- xrp: classic r... address (Ripple base58check alphabet); the extra id is the destination
  tag, an integer 0..4294967295.
- Anything else goes to ``fallback(network, address, extra_id)`` (for instance
  ``ChangeNowClient.address_validator()``), which raises AddressError or returns False for
  an invalid address; without a fallback an unknown network is an error.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from eth_utils import keccak, to_checksum_address

__all__ = [
    "AddressError",
    "EVM_NETWORKS",
    "canonical_network",
    "memo_required",
    "normalize_address",
    "validate_address",
]


class AddressError(ValueError):
    """An address (or its extra id) that must not receive a payout."""

    def __init__(self, message: str, *, network: str | None = None, unverified: bool = False):
        super().__init__(message)
        self.message = message
        self.network = network
        # True when the address could not be checked at all (fallback unreachable), as
        # opposed to checked and found wrong.
        self.unverified = unverified


Fallback = Callable[[str, str, str | None], bool | None]

EVM_NETWORKS = frozenset(
    {
        "eth",
        "bsc",
        "matic",
        "arbitrum",
        "op",
        "base",
        "avaxc",
        "ftm",
        "zksync",
        "linea",
        "etc",
        "celo",
        "cro",
    }
)

_ALIASES = {
    "erc20": "eth",
    "ethereum": "eth",
    "bep20": "bsc",
    "bnb-smart-chain": "bsc",
    "polygon": "matic",
    "pol": "matic",
    "arb": "arbitrum",
    "optimism": "op",
    "avax-c": "avaxc",
    "cchain": "avaxc",
    "bitcoin": "btc",
    "litecoin": "ltc",
    "dogecoin": "doge",
    "tron": "trx",
    "trc20": "trx",
    "monero": "xmr",
    "solana": "sol",
    "spl": "sol",
    "ripple": "xrp",
}

# Networks whose transfers carry an extra id (memo, destination tag). The payout form must
# offer the field; exchange-hosted addresses on these networks need it to credit the client.
_EXTRA_ID_NETWORKS = {
    "xrp": "destination tag",
    "xlm": "memo",
    "eos": "memo",
    "atom": "memo",
    "hbar": "memo",
    "ton": "comment",
    "bnb": "memo",  # BNB Beacon Chain
    "algo": "note",
    "xem": "message",
    "iost": "memo",
    "stx": "memo",
}


def canonical_network(network: str) -> str:
    key = network.strip().lower()
    return _ALIASES.get(key, key)


def memo_required(currency: str, network: str) -> bool:
    """True when payouts on this network carry an extra id (memo / destination tag).

    It does not prove the client's address needs one (a personal XRP wallet does not), only
    that the form must offer the field, and that a payout to an exchange-hosted address
    without it is likely lost. The network decides, whatever the currency (usdt on xlm
    needs a memo as xlm does); ``currency`` is part of the signature for callers that only
    know a ChangeNOW ticker pair.
    """
    del currency
    return canonical_network(network) in _EXTRA_ID_NETWORKS


def validate_address(
    network: str,
    address: str,
    extra_id: str | None = None,
    *,
    fallback: Fallback | None = None,
) -> None:
    """Raise AddressError unless ``address`` (and ``extra_id``) can receive on ``network``."""
    if not isinstance(network, str) or not network.strip():
        raise AddressError("network is required")
    net = canonical_network(network)
    if not isinstance(address, str) or not address:
        raise AddressError(f"{net} address is empty", network=net)
    if address != address.strip():
        raise AddressError(f"{net} address has leading or trailing spaces", network=net)
    if extra_id is not None and extra_id != "" and not isinstance(extra_id, str):
        raise AddressError(f"{net} extra id must be text", network=net)
    extra = extra_id or None

    validator = _VALIDATORS.get(net) or (_evm if net in EVM_NETWORKS else None)
    if validator is None:
        if fallback is None:
            raise AddressError(
                f"no address check for network {net!r}: add one or validate with ChangeNOW",
                network=net,
            )
        if fallback(net, address, extra) is False:
            raise AddressError(f"{net} address {address!r} is not valid", network=net)
        return
    validator(net, address)
    _check_extra_id(net, extra)


def normalize_address(network: str, address: str) -> str:
    """The form to store: EIP-55 checksummed for the Ethereum family, unchanged otherwise."""
    net = canonical_network(network)
    if net in EVM_NETWORKS:
        _evm(net, address)
        return to_checksum_address(address)
    return address


# -- extra ids -------------------------------------------------------------------------


def _check_extra_id(net: str, extra: str | None) -> None:
    if extra is None:
        return
    if net == "xrp":
        if not re.fullmatch(r"[0-9]{1,10}", extra) or int(extra) > 0xFFFFFFFF:
            raise AddressError(
                f"xrp destination tag must be an integer 0..4294967295, not {extra!r}",
                network=net,
            )
        return
    if net == "xmr":
        raise AddressError(
            "xmr takes no separate payment id: use an integrated address", network=net
        )
    raise AddressError(f"{net} payouts take no extra id (got {extra!r})", network=net)


# -- Ethereum family -------------------------------------------------------------------

_HEX40 = re.compile(r"0x[0-9a-fA-F]{40}")


def _evm(net: str, address: str) -> None:
    if not _HEX40.fullmatch(address):
        raise AddressError(
            f"{net} address must be 0x followed by 40 hex digits, got {address!r}", network=net
        )
    body = address[2:]
    if body.lower() == body or body.upper() == body:
        # No checksum to verify (EIP-55: single-case addresses are unchecksummed).
        if int(body, 16) == 0:
            raise AddressError(f"{net} address is the zero address", network=net)
        return
    if to_checksum_address(address) != address:
        raise AddressError(
            f"{net} address {address!r} fails its EIP-55 checksum (a typo?)", network=net
        )


# -- base58 / base58check --------------------------------------------------------------

BITCOIN_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
RIPPLE_ALPHABET = "rpshnaf39wBUDNEGHJKLM4PQRST7VWXYZ2bcdeCg65jkm8oFqi1tuvAxyz"


def b58decode(text: str, alphabet: str = BITCOIN_ALPHABET) -> bytes:
    index = {ch: i for i, ch in enumerate(alphabet)}
    number = 0
    for ch in text:
        if ch not in index:
            raise ValueError(f"character {ch!r} is not in the base58 alphabet")
        number = number * 58 + index[ch]
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    leading = len(text) - len(text.lstrip(alphabet[0]))
    return b"\x00" * leading + body


def b58encode(data: bytes, alphabet: str = BITCOIN_ALPHABET) -> str:
    number = int.from_bytes(data, "big")
    out = []
    while number:
        number, rem = divmod(number, 58)
        out.append(alphabet[rem])
    leading = len(data) - len(data.lstrip(b"\x00"))
    return alphabet[0] * leading + "".join(reversed(out))


def _dsha256(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def b58check_decode(text: str, alphabet: str = BITCOIN_ALPHABET) -> bytes:
    raw = b58decode(text, alphabet)
    if len(raw) < 5:
        raise ValueError("too short for base58check")
    payload, checksum = raw[:-4], raw[-4:]
    if _dsha256(payload)[:4] != checksum:
        raise ValueError("base58check checksum mismatch")
    return payload


def b58check_encode(payload: bytes, alphabet: str = BITCOIN_ALPHABET) -> str:
    return b58encode(payload + _dsha256(payload)[:4], alphabet)


def _base58check(
    net: str, address: str, versions: set[int], *, alphabet: str = BITCOIN_ALPHABET, size: int = 21
) -> None:
    try:
        payload = b58check_decode(address, alphabet)
    except ValueError as exc:
        raise AddressError(f"{net} address {address!r} is not valid: {exc}", network=net) from None
    if len(payload) != size or payload[0] not in versions:
        raise AddressError(
            f"{net} address {address!r} has the wrong version or length for {net} mainnet",
            network=net,
        )


# -- bech32 / bech32m (BIP-173, BIP-350) ------------------------------------------------

_BECH32_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_CONST = 1
_BECH32M_CONST = 0x2BC830A3


def _bech32_polymod(values: list[int]) -> int:
    generator = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= generator[i] if (top >> i) & 1 else 0
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def bech32_decode(text: str) -> tuple[str, list[int], int]:
    """(hrp, data without checksum, checksum constant) or ValueError."""
    if text.lower() != text and text.upper() != text:
        raise ValueError("mixed case")
    text = text.lower()
    pos = text.rfind("1")
    if pos < 1 or pos + 7 > len(text) or len(text) > 90:
        raise ValueError("bad separator position or length")
    if any(ord(c) < 33 or ord(c) > 126 for c in text):
        raise ValueError("invalid character")
    hrp = text[:pos]
    try:
        data = [_BECH32_CHARSET.index(c) for c in text[pos + 1 :]]
    except ValueError:
        raise ValueError("character outside the bech32 alphabet") from None
    const = _bech32_polymod(_hrp_expand(hrp) + data)
    if const not in (_BECH32_CONST, _BECH32M_CONST):
        raise ValueError("bech32 checksum mismatch")
    return hrp, data[:-6], const


def bech32_encode(hrp: str, data: list[int], const: int = _BECH32_CONST) -> str:
    polymod = _bech32_polymod(_hrp_expand(hrp) + data + [0] * 6) ^ const
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_BECH32_CHARSET[d] for d in data + checksum)


def _convertbits(data: list[int], frombits: int, tobits: int, pad: bool) -> list[int]:
    acc = bits = 0
    out = []
    maxv = (1 << tobits) - 1
    for value in data:
        if value < 0 or value >> frombits:
            raise ValueError("invalid data value")
        acc = (acc << frombits) | value
        bits += frombits
        while bits >= tobits:
            bits -= tobits
            out.append((acc >> bits) & maxv)
    if pad:
        if bits:
            out.append((acc << (tobits - bits)) & maxv)
    elif bits >= frombits or ((acc << (tobits - bits)) & maxv):
        raise ValueError("invalid padding")
    return out


def segwit_decode(hrp: str, address: str) -> tuple[int, bytes]:
    got_hrp, data, const = bech32_decode(address)
    if got_hrp != hrp:
        raise ValueError(f"prefix {got_hrp!r} is not {hrp!r}")
    if not data:
        raise ValueError("empty data")
    version = data[0]
    program = bytes(_convertbits(data[1:], 5, 8, False))
    if version > 16 or not 2 <= len(program) <= 40:
        raise ValueError("invalid witness version or program length")
    if version == 0 and len(program) not in (20, 32):
        raise ValueError("v0 witness program must be 20 or 32 bytes")
    if (version == 0) != (const == _BECH32_CONST):
        raise ValueError("v0 needs bech32, v1+ needs bech32m")
    return version, program


def segwit_encode(hrp: str, version: int, program: bytes) -> str:
    const = _BECH32_CONST if version == 0 else _BECH32M_CONST
    return bech32_encode(hrp, [version] + _convertbits(list(program), 8, 5, True), const)


def _utxo(net: str, address: str, *, versions: set[int], hrp: str | None) -> None:
    if hrp and address.lower().startswith(hrp + "1"):
        try:
            segwit_decode(hrp, address)
        except ValueError as exc:
            raise AddressError(
                f"{net} address {address!r} is not valid: {exc}", network=net
            ) from None
        return
    try:
        other_hrp = bech32_decode(address)[0] if hrp else None
    except ValueError:
        other_hrp = None  # not bech32 at all: judge it as base58check below
    if other_hrp is not None:
        raise AddressError(
            f"{net} address {address!r} is bech32 with prefix {other_hrp!r}, not "
            f"{hrp!r}: a testnet address or another chain's",
            network=net,
        )
    _base58check(net, address, versions)


def _btc(net: str, address: str) -> None:
    _utxo(net, address, versions={0x00, 0x05}, hrp="bc")


def _ltc(net: str, address: str) -> None:
    _utxo(net, address, versions={0x30, 0x32, 0x05}, hrp="ltc")


def _doge(net: str, address: str) -> None:
    _utxo(net, address, versions={0x1E, 0x16}, hrp=None)


def _trx(net: str, address: str) -> None:
    if not address.startswith("T"):
        raise AddressError(f"trx address must start with T, got {address!r}", network=net)
    _base58check(net, address, {0x41})


def _xrp(net: str, address: str) -> None:
    if not address.startswith("r"):
        raise AddressError(
            f"xrp address must be a classic r... address, got {address!r}", network=net
        )
    _base58check(net, address, {0x00}, alphabet=RIPPLE_ALPHABET)


def _sol(net: str, address: str) -> None:
    if not 32 <= len(address) <= 44:
        raise AddressError(f"sol address must be 32 to 44 characters, got {address!r}", network=net)
    try:
        raw = b58decode(address)
    except ValueError as exc:
        raise AddressError(f"sol address {address!r} is not valid: {exc}", network=net) from None
    if len(raw) != 32:
        raise AddressError(
            f"sol address must decode to 32 bytes, {address!r} decodes to {len(raw)}", network=net
        )


# -- Monero ----------------------------------------------------------------------------

_XMR_BLOCK = 8
_XMR_ENCODED_BLOCK = 11
_XMR_ENCODED_SIZES = [0, 2, 3, 5, 6, 7, 9, 10, 11]  # encoded length of 0..8 raw bytes
XMR_STANDARD, XMR_INTEGRATED, XMR_SUBADDRESS = 18, 19, 42


def xmr_b58decode(text: str) -> bytes:
    index = {ch: i for i, ch in enumerate(BITCOIN_ALPHABET)}
    out = bytearray()
    for start in range(0, len(text), _XMR_ENCODED_BLOCK):
        chunk = text[start : start + _XMR_ENCODED_BLOCK]
        try:
            size = _XMR_ENCODED_SIZES.index(len(chunk))
        except ValueError:
            raise ValueError("invalid Monero base58 length") from None
        number = 0
        for ch in chunk:
            if ch not in index:
                raise ValueError(f"character {ch!r} is not in the base58 alphabet")
            number = number * 58 + index[ch]
        if number >= 1 << (8 * size):
            raise ValueError("Monero base58 block overflow")
        out += number.to_bytes(size, "big")
    return bytes(out)


def xmr_b58encode(data: bytes) -> str:
    out = []
    for start in range(0, len(data), _XMR_BLOCK):
        chunk = data[start : start + _XMR_BLOCK]
        number = int.from_bytes(chunk, "big")
        chars = []
        for _ in range(_XMR_ENCODED_SIZES[len(chunk)]):
            number, rem = divmod(number, 58)
            chars.append(BITCOIN_ALPHABET[rem])
        out.append("".join(reversed(chars)))
    return "".join(out)


def _xmr(net: str, address: str) -> None:
    if len(address) not in (95, 106):
        raise AddressError(
            f"xmr address must be 95 (standard/subaddress) or 106 (integrated) characters, "
            f"got {len(address)}",
            network=net,
        )
    try:
        raw = xmr_b58decode(address)
    except ValueError as exc:
        raise AddressError(f"xmr address is not valid: {exc}", network=net) from None
    body, checksum = raw[:-4], raw[-4:]
    if keccak(body)[:4] != checksum:
        raise AddressError("xmr address fails its checksum (a typo?)", network=net)
    expected = {95: {XMR_STANDARD, XMR_SUBADDRESS}, 106: {XMR_INTEGRATED}}[len(address)]
    if raw[0] not in expected:
        raise AddressError(
            f"xmr address has network byte {raw[0]}, not a mainnet address of its length",
            network=net,
        )


_VALIDATORS: dict[str, Callable[[str, str], None]] = {
    "btc": _btc,
    "ltc": _ltc,
    "doge": _doge,
    "trx": _trx,
    "xrp": _xrp,
    "sol": _sol,
    "xmr": _xmr,
}
