"""Every ChangeNOW client call against the sandbox over real HTTP, including exchanges
funded through the sandbox signer and driven through every scripted outcome."""

from __future__ import annotations

from decimal import Decimal

import pytest

from integrations.changenow.client import ChangeNowClient
from integrations.changenow.types import CreatedExchange
from integrations.errors import ChangeNowError
from integrations.sandbox import SandboxServer
from integrations.wallet.client import WalletClient
from tests.conftest import Control
from tests.integrations.conftest import NO_WAIT

CLIENT_ETH = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
CLIENT_BTC = "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"


def _eth_to_usdt(
    changenow: ChangeNowClient, wallet: WalletClient, amount: str = "0.1", **extra: object
) -> CreatedExchange:
    return changenow.create_exchange(
        from_currency="eth",
        to_currency="usdt",
        from_network="eth",
        to_network="eth",
        from_amount=Decimal(amount),
        address=CLIENT_ETH,
        refund_address=wallet.host_address,
        **extra,  # type: ignore[arg-type]
    )


def _deposit_eth(wallet: WalletClient, exchange: CreatedExchange, amount: str = "0.1") -> str:
    signed = wallet.sign(
        wallet.build_eth_transfer(exchange.payin_address, Decimal(amount), nonce=wallet.get_nonce())
    )
    return wallet.broadcast(signed)


def test_it_lists_currencies_with_networks_and_token_contracts(changenow: ChangeNowClient) -> None:
    currencies = changenow.get_currencies()
    usdt_eth = next(c for c in currencies if c.ticker == "usdt" and c.network == "eth")
    assert usdt_eth.token_contract == "0xdAC17F958D2ee523a2206206994597C13D831ec7"
    assert usdt_eth.is_stable and usdt_eth.supports_fixed_rate
    assert next(c for c in currencies if c.ticker == "xrp").has_external_id
    fixed = changenow.get_currencies(flow="fixed-rate")
    assert "xmr" not in {c.ticker for c in fixed} and len(fixed) < len(currencies)


def test_it_reads_min_amount_and_range(changenow: ChangeNowClient, control: Control) -> None:
    control.config(min_amounts={"eth": "0.0123"})
    assert changenow.get_min_amount("eth", "usdt", from_network="eth", to_network="eth") == (
        Decimal("0.0123")
    )
    standard = changenow.get_range("eth", "usdt", to_network="eth")
    assert standard.min_amount == Decimal("0.0123") and standard.max_amount is None
    fixed = changenow.get_range("eth", "usdt", to_network="eth", flow="fixed-rate")
    assert fixed.max_amount is not None and fixed.max_amount > fixed.min_amount  # type: ignore[operator]


def test_it_quotes_direct_and_reverse(changenow: ChangeNowClient) -> None:
    direct = changenow.get_estimate("eth", "usdt", from_amount=Decimal("1"), to_network="eth")
    assert direct.to_amount == Decimal("2985.000000")  # 3000 less the sandbox's 0.5 %
    reverse = changenow.get_estimate(
        "usdt", "btc", to_amount=Decimal("0.01"), from_network="eth", type="reverse"
    )
    assert reverse.type == "reverse" and reverse.from_amount is not None
    assert reverse.from_amount * Decimal("0.995") / 60000 >= Decimal("0.01")  # enough to arrive


def test_it_rejects_a_quote_below_the_minimum(changenow: ChangeNowClient) -> None:
    with pytest.raises(ChangeNowError) as caught:
        changenow.get_estimate("eth", "usdt", from_amount=Decimal("0.0001"), to_network="eth")
    assert caught.value.code == "deposit_too_small" and caught.value.permanent


def test_it_locks_a_fixed_rate_with_a_rate_id(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    quote = changenow.get_estimate(
        "eth", "usdt", from_amount=Decimal("0.2"), to_network="eth", flow="fixed-rate"
    )
    assert quote.rate_id and quote.valid_until is not None
    created = _eth_to_usdt(changenow, wallet, "0.2", flow="fixed-rate", rate_id=quote.rate_id)
    assert created.valid_until == quote.valid_until
    _deposit_eth(wallet, created, "0.2")
    control.advance(10)
    finished = changenow.get_exchange(created.id)
    assert finished.status == "finished"
    assert finished.amount_to == quote.to_amount  # fixed rate: exactly what was quoted


def test_it_rejects_an_unknown_or_expired_rate_id(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    with pytest.raises(ChangeNowError) as caught:
        _eth_to_usdt(changenow, wallet, flow="fixed-rate", rate_id="nope")
    assert caught.value.code == "rate_id_not_found_or_expired"
    quote = changenow.get_estimate(
        "eth", "usdt", from_amount=Decimal("0.1"), to_network="eth", flow="fixed-rate"
    )
    control.advance(601)
    with pytest.raises(ChangeNowError) as caught:
        _eth_to_usdt(changenow, wallet, flow="fixed-rate", rate_id=quote.rate_id)
    assert caught.value.code == "rate_id_not_found_or_expired"


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1Beaed"}, "not_valid_address"),
        ({"refund_address": "not-an-address"}, "not_valid_refund_address"),
        ({"from_amount": Decimal("0.0001")}, "out_of_range"),
        ({"to_currency": "dogecoin"}, "pair_is_inactive"),
        ({"to_network": "sol"}, "pair_is_inactive"),
    ],
)
def test_it_rejects_invalid_exchanges_with_permanent_codes(
    changenow: ChangeNowClient, kwargs: dict[str, object], code: str
) -> None:
    params: dict[str, object] = {
        "from_currency": "eth",
        "to_currency": "usdt",
        "from_network": "eth",
        "to_network": "eth",
        "from_amount": Decimal("0.1"),
        "address": CLIENT_ETH,
    }
    params.update(kwargs)
    with pytest.raises(ChangeNowError) as caught:
        changenow.create_exchange(**params)  # type: ignore[arg-type]
    assert caught.value.code == code
    assert caught.value.permanent


def test_it_rejects_a_fixed_rate_pair_that_has_none(changenow: ChangeNowClient) -> None:
    with pytest.raises(ChangeNowError) as caught:
        changenow.get_estimate("eth", "xmr", from_amount=Decimal("1"), flow="fixed-rate")
    assert caught.value.code == "not_valid_fixed_rate_pair"


def test_it_follows_a_funded_exchange_to_finished_with_a_real_amount(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _eth_to_usdt(changenow, wallet)
    assert created.payin_address.startswith("0x") and created.to_amount == Decimal("298.500000")
    waiting = changenow.get_exchange(created.id)
    assert waiting.status == "waiting" and waiting.amount_from is None and waiting.amount_to is None
    tx_hash = _deposit_eth(wallet, created)
    seen = []
    for _ in range(4):
        exchange = changenow.get_exchange(created.id)
        seen.append(exchange.status)
        if exchange.status == "confirming":
            assert exchange.amount_from == Decimal("0.1") and exchange.payin_hash == tx_hash
            assert exchange.amount_to is None  # not known yet: never read as 0
        control.advance(2)
    assert seen == ["confirming", "exchanging", "sending", "finished"]
    final = changenow.get_exchange(created.id)
    assert final.amount_to is not None and final.amount_to != created.to_amount
    assert (
        Decimal("0.97") * created.to_amount < final.amount_to < Decimal("1.01") * created.to_amount
    )  # type: ignore[operator]
    assert final.payout_hash and final.deposit_received_at is not None and final.is_terminal


def test_it_reports_a_scripted_failure(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _eth_to_usdt(changenow, wallet)
    control.script(created.id, outcome="failed")
    _deposit_eth(wallet, created)
    control.advance(10)
    failed = changenow.get_exchange(created.id)
    assert failed.status == "failed" and failed.amount_to is None and failed.amount_from


def test_it_reports_a_scripted_refund_and_pays_it_back(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _eth_to_usdt(changenow, wallet)
    control.script(created.id, outcome="refunded", refund_amount="0.0987")
    _deposit_eth(wallet, created)
    before = wallet.get_balance()
    control.advance(10)
    refunded = changenow.get_exchange(created.id)
    assert refunded.status == "refunded"
    assert refunded.refund_amount == Decimal("0.0987") and refunded.refund_hash
    assert wallet.get_balance() - before == Decimal("0.0987")  # back at the refund address


def test_it_expires_an_unfunded_exchange(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _eth_to_usdt(changenow, wallet)
    control.script(created.id, outcome="expired")
    expired = changenow.get_exchange(created.id)
    assert expired.status == "expired" and expired.amount_from is None


def test_it_keeps_a_stuck_exchange_at_its_status(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _eth_to_usdt(changenow, wallet)
    control.script(created.id, outcome="stuck", status="exchanging")
    _deposit_eth(wallet, created)
    control.advance(3600)
    assert changenow.get_exchange(created.id).status == "exchanging"


def test_it_returns_an_unknown_status_as_is(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = _eth_to_usdt(changenow, wallet)
    control.script(created.id, outcome="unknown", status="hold_for_kyc")
    _deposit_eth(wallet, created)
    control.advance(10)
    exchange = changenow.get_exchange(created.id)
    assert exchange.status == "hold_for_kyc" and not exchange.is_known_status


def test_it_funds_a_usdt_payout_with_an_erc20_transfer(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    created = changenow.create_exchange(
        from_currency="usdt",
        to_currency="btc",
        from_network="eth",
        to_network="btc",
        from_amount=Decimal("150.25"),
        address=CLIENT_BTC,
    )
    signed = wallet.sign(
        wallet.build_erc20_transfer(
            created.payin_address, Decimal("150.25"), nonce=wallet.get_nonce()
        )
    )
    wallet.broadcast(signed)
    control.advance(10)
    exchange = changenow.get_exchange(created.id)
    assert exchange.status == "finished" and exchange.amount_from == Decimal("150.25")
    assert exchange.amount_to is not None and exchange.amount_to < Decimal("0.0026")
    assert exchange.payout_hash and not exchange.payout_hash.startswith("0x")  # a btc txid


def test_it_returns_not_found_for_an_unknown_id(changenow: ChangeNowClient) -> None:
    with pytest.raises(ChangeNowError) as caught:
        changenow.get_exchange("00000000000000")
    assert caught.value.code == "not_found" and caught.value.status == 404


def test_it_validates_addresses_remotely(changenow: ChangeNowClient) -> None:
    assert changenow.validate_address("btc", CLIENT_BTC).result is True
    verdict = changenow.validate_address("btc", CLIENT_BTC[:-1] + "5")
    assert verdict.result is False and verdict.message


def test_it_lists_partner_exchanges(
    changenow: ChangeNowClient, wallet: WalletClient, control: Control
) -> None:
    first = _eth_to_usdt(changenow, wallet)
    control.advance(1)
    second = _eth_to_usdt(changenow, wallet, "0.2")
    _deposit_eth(wallet, second, "0.2")
    listing = changenow.list_exchanges(limit=10, sort_direction="ASC")
    assert listing.count == 2
    assert [row.id for row in listing.exchanges] == [first.id, second.id]
    assert listing.exchanges[1].payin.amount == Decimal("0.2")
    assert listing.exchanges[1].payin.expected_amount == Decimal("0.2")
    waiting = changenow.list_exchanges(statuses=["waiting"])
    assert [row.id for row in waiting.exchanges] == [first.id]


def test_it_is_refused_without_the_right_api_key(sandbox: SandboxServer, control: Control) -> None:
    control.config(api_key="right")
    wrong = ChangeNowClient(sandbox.url, "wrong", retry=NO_WAIT)
    with pytest.raises(ChangeNowError) as caught:
        wrong.get_currencies()
    assert caught.value.code == "unauthorized" and caught.value.permanent
    assert ChangeNowClient(sandbox.url, "right", retry=NO_WAIT).get_currencies()


def test_it_falls_back_to_changenow_for_networks_without_a_local_check(
    changenow: ChangeNowClient,
) -> None:
    from integrations.addresses import AddressError, validate_address

    fallback = changenow.address_validator()
    validate_address("usdt-ish-chain", "whatever", fallback=lambda n, a, e: True)
    with pytest.raises(AddressError, match="ChangeNOW rejects"):
        fallback("btc", "bc1-not-valid", None)
    assert fallback("btc", CLIENT_BTC, None) is True
