"""Address validation vectors: published valid addresses per network, and the same with a
typo (which the checksum must catch)."""

from __future__ import annotations

import pytest

from integrations.addresses import (
    AddressError,
    bech32_encode,
    memo_required,
    normalize_address,
    validate_address,
)

VALID = [
    ("eth", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),  # EIP-55 test vector
    ("eth", "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"),  # EIP-55 test vector
    ("eth", "0xdAC17F958D2ee523a2206206994597C13D831ec7"),  # USDT
    ("eth", "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"),  # single case: unchecksummed
    ("eth", "0x5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED"),
    ("bsc", "0x55d398326f99059fF775485246999027B3197955"),  # USDT on BSC
    ("bep20", "0x55d398326f99059fF775485246999027B3197955"),
    ("matic", "0xc2132D05D31c914a87C6611C10748AEb04B58e8F"),  # USDT on Polygon
    ("arbitrum", "0xFd086bC7CD5C481DCC9C85ebE478A1C0b69FCbb9"),  # USDT on Arbitrum
    ("btc", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"),  # genesis P2PKH
    ("btc", "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy"),  # BIP-13 P2SH
    ("btc", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"),  # BIP-173 P2WPKH
    ("btc", "BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4"),  # upper case is valid bech32
    ("btc", "bc1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qccfmv3"),  # P2WSH
    ("btc", "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0"),  # BIP-350 taproot
    ("ltc", "LM2WMpR1Rp6j3Sa59cMXMs1SPzj9eXpGc1"),
    ("ltc", "ltc1qw508d6qejxtdg4y5r3zarvary0c5xw7kgmn4n9"),
    ("doge", "DH5yaieqoZN36fDVciNyRueRGvGLR3mr7L"),
    ("trx", "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"),  # USDT TRC20 contract
    ("tron", "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t"),
    (
        "xmr",
        "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3A",
    ),
    (
        "xmr",
        "888tNkZrPN6JsEgekjMnABU4TBzc2Dt29EPAvkRxbANsAnjyPbb3iQ1YBRk1UXcdRsiKc9dhwMVgN5S9cQUiyoogDavup3H",
    ),
    (
        "xmr",
        "4LL9oSLmtpccfufTMvppY6JwXNouMBzSkbLYfpAV5Usx3skxNgYeYTRj5UzqtReoS44qo9mtmXCqY45DJ852K5Jv2bYXZKKQePHES9khPK",
    ),
    ("sol", "So11111111111111111111111111111111111111112"),
    ("sol", "EPjFWdd5AufqSSqeM2qN1xzybapC8G4wEGGkZwyTDt1v"),
    ("xrp", "rHb9CJAWyB4rj91VRWn96DkukG4bwdtyTh"),  # XRPL genesis account
    ("xrp", "rf1BiGeXwwQoi8Z2ueFYTEXSwuJYfV2Jpn"),
]


@pytest.mark.parametrize(("network", "address"), VALID)
def test_it_accepts_valid_addresses(network: str, address: str) -> None:
    validate_address(network, address)


def _typo(address: str) -> str:
    """Change one character in the middle, staying in the address's alphabet."""
    i = len(address) // 2
    replacement = "2" if address[i] != "2" else "3"
    if address[i].isupper() and address.startswith("0x"):
        replacement = "B" if address[i] != "B" else "C"
    return address[:i] + replacement + address[i + 1 :]


def _has_checksum(network: str, address: str) -> bool:
    if network in ("btc", "ltc", "doge", "trx", "tron", "xmr", "xrp"):
        return True
    body = address[2:]
    return address.startswith("0x") and body not in (body.lower(), body.upper())


@pytest.mark.parametrize(("network", "address"), [v for v in VALID if _has_checksum(*v)])
def test_it_rejects_the_same_address_with_a_typo(network: str, address: str) -> None:
    with pytest.raises(AddressError):
        validate_address(network, _typo(address))


@pytest.mark.parametrize(
    ("network", "address", "reason"),
    [
        ("eth", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1Beaed", "EIP-55"),  # case flipped
        ("eth", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe", "40 hex"),
        ("eth", "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "40 hex"),
        ("eth", "0x0000000000000000000000000000000000000000", "zero address"),
        ("eth", " 0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "spaces"),
        ("eth", "", "empty"),
        ("btc", "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5", "checksum"),
        ("btc", "bc1qW508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "mixed case"),
        ("btc", "tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx", "prefix 'tb'"),  # testnet
        ("btc", "LM2WMpR1Rp6j3Sa59cMXMs1SPzj9eXpGc1", "wrong version"),  # a litecoin address
        ("btc", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfN0", "alphabet"),  # 0 is not base58
        ("ltc", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "wrong version"),
        ("trx", "0xdAC17F958D2ee523a2206206994597C13D831ec7", "start with T"),
        ("trx", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "start with T"),
        (
            "xmr",
            "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wfn3RVGQBEP3",
            "95",
        ),
        ("sol", "So1111111111111111111111111111111111111111", "32 bytes"),
        ("sol", "So1111111111111111111111111111111111111111O", "alphabet"),
        ("xrp", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa", "classic r"),
    ],
)
def test_it_rejects_invalid_addresses_with_a_clear_reason(
    network: str, address: str, reason: str
) -> None:
    with pytest.raises(AddressError, match=reason):
        validate_address(network, address)


def test_it_rejects_taproot_with_a_bech32_instead_of_bech32m_checksum() -> None:
    # Same witness program as the BIP-350 vector, checksummed with the BIP-173 constant.
    from integrations.addresses import _convertbits

    program = bytes.fromhex("79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
    wrong = bech32_encode("bc", [1] + _convertbits(list(program), 8, 5, True), 1)
    with pytest.raises(AddressError, match="bech32m"):
        validate_address("btc", wrong)


def test_it_checks_xrp_destination_tags() -> None:
    validate_address("xrp", "rHb9CJAWyB4rj91VRWn96DkukG4bwdtyTh", "4294967295")
    for bad in ("4294967296", "-1", "12a", "1.5"):
        with pytest.raises(AddressError, match="destination tag"):
            validate_address("xrp", "rHb9CJAWyB4rj91VRWn96DkukG4bwdtyTh", bad)


def test_it_refuses_an_extra_id_where_the_network_has_none() -> None:
    with pytest.raises(AddressError, match="no extra id"):
        validate_address("eth", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "123")
    with pytest.raises(AddressError, match="integrated address"):
        validate_address("xmr", VALID[20][1], "abcd")
    validate_address("eth", "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed", "")  # empty = none


def test_it_delegates_unknown_networks_to_the_fallback_or_refuses() -> None:
    calls: list[tuple[str, str, str | None]] = []

    def fallback(network: str, address: str, extra_id: str | None) -> bool:
        calls.append((network, address, extra_id))
        return address == "good"

    validate_address("ton", "good", "memo-1", fallback=fallback)
    assert calls == [("ton", "good", "memo-1")]
    with pytest.raises(AddressError, match="not valid"):
        validate_address("ton", "bad", fallback=fallback)
    with pytest.raises(AddressError, match="no address check for network 'ton'"):
        validate_address("ton", "good")
    with pytest.raises(AddressError, match="network is required"):
        validate_address("", "good")


def test_it_normalizes_evm_addresses_to_their_checksum() -> None:
    lower = "0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed"
    assert normalize_address("eth", lower) == "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
    assert normalize_address("btc", "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa") == (
        "1A1zP1eP5QGefi2DMPTfTL5SLmv7DivfNa"
    )


def test_it_knows_which_networks_carry_a_memo() -> None:
    assert memo_required("xrp", "xrp")
    assert memo_required("usdt", "xlm")
    assert not memo_required("usdt", "eth")
    assert not memo_required("btc", "btc")
