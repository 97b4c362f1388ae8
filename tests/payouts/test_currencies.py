"""The currency catalogue: refreshed from ChangeNOW's list (sandbox over HTTP), refusing to
lose itself to a failed or empty answer, and the names people type normalised."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command

from integrations.changenow.types import Currency as Listed
from payouts.currencies import (
    CurrencyError,
    currency_catalogue_refresh,
    currency_catalogue_store,
    currency_normalise,
)
from payouts.models import AuditEvent, Currency
from payouts.transitions import Actor
from tests.conftest import Control

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("tests")


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        (("USDT", "ERC20"), ("usdt", "eth")),
        (("usdt", "Ethereum"), ("usdt", "eth")),
        (("Tether", "TRC20"), ("usdt", "trx")),
        (("BTC", "Bitcoin"), ("btc", "btc")),
        (("Bitcoin", "bitcoin"), ("btc", "btc")),
        ((" Monero ", "XMR"), ("xmr", "xmr")),
        (("XRP", "Ripple"), ("xrp", "xrp")),
        (("Stellar", "Stellar"), ("xlm", "xlm")),
        (("doge", "DOGE"), ("doge", "doge")),
    ],
)
def test_names_people_type_are_normalised(typed: tuple[str, str], stored: tuple[str, str]) -> None:
    assert currency_normalise(currency=typed[0], network=typed[1]) == stored


def test_a_refresh_stores_the_list_and_marks_what_left_it_inactive(providers: Control) -> None:
    # The providers fixture loaded the list once, as bootstrap does.
    assert Currency.objects.filter(ticker="usdt").count() == 3
    xrp = Currency.objects.get(ticker="xrp")
    assert xrp.has_external_id and xrp.active and not xrp.is_fiat
    assert Currency.objects.get(ticker="usd").is_fiat

    providers.config(inactive_currencies=["btc", "usdt:bsc"])
    result = currency_catalogue_refresh(actor=ACTOR)
    assert result.deactivated == ["btc/btc", "usdt/bsc"]
    assert not Currency.objects.get(ticker="btc").active
    assert Currency.objects.get(ticker="usdt", network="eth").active
    event = AuditEvent.objects.filter(kind="catalogue_refreshed").latest("id")
    assert event.data["deactivated"] == ["btc/btc", "usdt/bsc"]

    providers.config(inactive_currencies=[])
    again = currency_catalogue_refresh(actor=ACTOR)
    assert again.reactivated == ["btc/btc", "usdt/bsc"] and not again.deactivated
    assert Currency.objects.get(ticker="btc").active


def test_a_failed_or_empty_answer_leaves_the_catalogue_as_it_was(
    providers: Control, settings
) -> None:  # noqa: ANN001
    before = list(Currency.objects.values_list("ticker", "network", "active"))
    with pytest.raises(CurrencyError, match="left as it was"):
        currency_catalogue_store(currencies=[], actor=ACTOR)
    settings.CHANGENOW_API_URL = "http://127.0.0.1:9"  # nothing listens there
    with pytest.raises(CurrencyError, match="could not be read"):
        currency_catalogue_refresh(actor=ACTOR)
    assert list(Currency.objects.values_list("ticker", "network", "active")) == before


def test_a_list_with_unusable_rows_stores_only_the_usable_ones() -> None:
    def listed(ticker: str, network: str) -> Listed:
        return Listed(
            ticker=ticker,
            network=network,
            name=ticker.upper(),
            legacy_ticker=None,
            token_contract=None,
            has_external_id=False,
            is_extra_id_supported=False,
            is_fiat=False,
            is_stable=False,
            featured=False,
            supports_fixed_rate=False,
            buy=True,
            sell=True,
            raw={},
        )

    result = currency_catalogue_store(
        currencies=[listed("BTC", "BTC"), listed("", "eth"), listed("x" * 40, "eth")],
        actor=ACTOR,
    )
    assert result.listed == 1
    assert list(Currency.objects.values_list("ticker", "network")) == [("btc", "btc")]


def test_refresh_currencies_prints_what_changed_and_fails_loudly(
    providers: Control, settings
) -> None:  # noqa: ANN001
    out = io.StringIO()
    call_command("refresh_currencies", "--json", stdout=out)
    answer = json.loads(out.getvalue())
    assert answer["listed"] == Currency.objects.filter(active=True).count()
    assert answer["added"] == [] and answer["deactivated"] == []
    settings.CHANGENOW_API_URL = "http://127.0.0.1:9"
    err = io.StringIO()
    with pytest.raises(SystemExit) as exc:
        call_command("refresh_currencies", stderr=err)
    assert exc.value.code == 1 and "could not be read" in err.getvalue()


def test_the_first_client_of_a_fresh_install_loads_the_list(providers: Control) -> None:
    from payouts.services import client_validate

    Currency.objects.all().delete()
    cleaned = client_validate(
        data={
            "reference": "acme",
            "name": "Acme",
            "payout_strategy": "threshold",
            "payout_threshold_usd": "50",
            "payout_currency": "USDT",
            "payout_network": "ERC20",
            "payout_address": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        }
    )
    assert (cleaned["payout_currency"], cleaned["payout_network"]) == ("usdt", "eth")
    assert Currency.objects.count() > 10
