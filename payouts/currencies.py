"""ChangeNOW's currency catalogue, and the names finance staff type for its pairs.

A client's payout destination must be an active, non-fiat (ticker, network) of ChangeNOW's
list (DESIGN 12.4). The list is kept in the `Currency` table, refreshed daily by a schedule
and on demand (admin button, `manage.py refresh_currencies`); a refresh that fails or lists
nothing leaves the table as it was. What people type ("USDT" on "ERC20", "Bitcoin") is
normalised through one short explicit alias table before the lookup.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from integrations.addresses import canonical_network
from integrations.changenow.types import Currency as ListedCurrency
from integrations.errors import ProviderError
from payouts.models import Currency
from payouts.transitions import Actor, audit_record


class CurrencyError(ValueError):
    """A payout currency or network that cannot be used; the message says what would."""


# Names people use for a currency, to ChangeNOW's ticker. Explicit and short on purpose:
# anything else must be typed as ChangeNOW's ticker.
CURRENCY_ALIASES: dict[str, str] = {
    "tether": "usdt",
    "usdt": "usdt",
    "usd coin": "usdc",
    "ethereum": "eth",
    "ether": "eth",
    "bitcoin": "btc",
    "xbt": "btc",
    "litecoin": "ltc",
    "dogecoin": "doge",
    "monero": "xmr",
    "tron": "trx",
    "solana": "sol",
    "ripple": "xrp",
    "stellar": "xlm",
    "toncoin": "ton",
    "bitcoin cash": "bch",
    "polygon": "matic",
}
# Network names beyond those `canonical_network` knows (erc20, trc20, bep20, bitcoin...).
NETWORK_ALIASES: dict[str, str] = {"stellar": "xlm", "toncoin": "ton", "bitcoin cash": "bch"}


def currency_normalise(*, currency: str, network: str) -> tuple[str, str]:
    """("USDT", "ERC20") -> ("usdt", "eth"); ("BTC", "Bitcoin") -> ("btc", "btc")."""
    ticker = " ".join((currency or "").split()).lower()
    net = " ".join((network or "").split()).lower()
    ticker = CURRENCY_ALIASES.get(ticker, ticker)
    net = NETWORK_ALIASES.get(net, canonical_network(net) if net else net)
    return ticker, net


def currency_pair_check(*, currency: str, network: str, extra_id: str = "") -> Currency:
    """The catalogue row of an already normalised pair, or CurrencyError saying why not."""
    if not currency or not network:
        raise CurrencyError("payout currency and network are required")
    row = Currency.objects.filter(ticker=currency, network=network).first()
    if row is None:
        known = sorted(
            Currency.objects.filter(ticker=currency, active=True).values_list("network", flat=True)
        )
        if known:
            raise CurrencyError(
                f"ChangeNOW does not offer {currency} on {network}; it offers {currency} on "
                f"{', '.join(known)}"
            )
        if not Currency.objects.exists():
            raise CurrencyError(
                "the currency list is not loaded yet: run manage.py refresh_currencies "
                "(or the admin's Refresh button) once ChangeNOW can be reached"
            )
        raise CurrencyError(f"ChangeNOW does not offer {currency} on {network}")
    if row.is_fiat:
        raise CurrencyError(f"{currency} is a fiat currency: payouts go to a crypto address")
    if not row.active:
        raise CurrencyError(f"ChangeNOW no longer offers {currency} on {network}")
    if row.has_external_id and not extra_id:
        raise CurrencyError(
            f"{currency} on {network} needs an extra id (destination tag or memo) to credit "
            "the receiver: fill in payout_extra_id"
        )
    return row


def currency_pair_states() -> dict[tuple[str, str], bool]:
    """{(ticker, network): active} of the whole catalogue, for the payout sweep."""
    return {
        (ticker, network): active
        for ticker, network, active in Currency.objects.values_list("ticker", "network", "active")
    }


def currency_choices() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Pick-lists of the active crypto currencies: (tickers, networks), in one query."""
    names: dict[str, str] = {}
    networks: set[str] = set()
    rows = Currency.objects.filter(active=True, is_fiat=False).values_list(
        "ticker", "network", "name"
    )
    for ticker, network, name in rows:
        names.setdefault(ticker, name.split(" (")[0])
        networks.add(network)
    tickers = sorted((t, f"{t.upper()} - {n}") for t, n in names.items())
    return tickers, sorted((n, n) for n in networks)


@dataclass
class CatalogueRefresh:
    listed: int = 0
    added: list[str] = field(default_factory=list)
    reactivated: list[str] = field(default_factory=list)
    deactivated: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "listed": self.listed,
            "added": self.added,
            "reactivated": self.reactivated,
            "deactivated": self.deactivated,
        }


# One statement upserts the whole list; `xmax = 0` tells an insert from an update.
_UPSERT_SQL = """
WITH listed AS (
    SELECT * FROM unnest(
        %(tickers)s::text[], %(networks)s::text[], %(names)s::text[], %(legacy)s::text[],
        %(extra)s::boolean[], %(fiat)s::boolean[]
    ) AS l(ticker, network, name, legacy_ticker, has_external_id, is_fiat)
), before AS (
    SELECT c.ticker, c.network, c.active FROM payouts_currency c
    JOIN listed USING (ticker, network)
), upserted AS (
    INSERT INTO payouts_currency (
        ticker, network, name, legacy_ticker, has_external_id, is_fiat, active, first_seen_at,
        refreshed_at
    )
    SELECT ticker, network, name, legacy_ticker, has_external_id, is_fiat, true, %(now)s,
           %(now)s
    FROM listed
    ON CONFLICT (ticker, network) DO UPDATE SET
        name = EXCLUDED.name, legacy_ticker = EXCLUDED.legacy_ticker,
        has_external_id = EXCLUDED.has_external_id, is_fiat = EXCLUDED.is_fiat,
        active = true, refreshed_at = EXCLUDED.refreshed_at
    RETURNING ticker, network, (xmax = 0) AS inserted
)
SELECT u.ticker, u.network, u.inserted, coalesce(b.active, true)
FROM upserted u LEFT JOIN before b USING (ticker, network)
"""
_DEACTIVATE_SQL = """
UPDATE payouts_currency SET active = false
WHERE active AND refreshed_at < %(now)s
RETURNING ticker, network
"""


def currency_catalogue_store(
    *, currencies: Iterable[ListedCurrency], actor: Actor
) -> CatalogueRefresh:
    """Store ChangeNOW's list of active currencies: upsert each, mark the unlisted inactive."""
    seen: dict[tuple[str, str], ListedCurrency] = {}
    for item in currencies:
        key = (item.ticker.strip().lower(), item.network.strip().lower())
        if all(key) and len(key[0]) <= 16 and len(key[1]) <= 16:
            seen.setdefault(key, item)
    if not seen:
        raise CurrencyError("ChangeNOW listed no usable currency: the catalogue was left as it was")
    pairs = sorted(seen)
    now = timezone.now()
    result = CatalogueRefresh(listed=len(pairs))
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            _UPSERT_SQL,
            {
                "tickers": [t for t, _n in pairs],
                "networks": [n for _t, n in pairs],
                "names": [seen[p].name[:100] for p in pairs],
                "legacy": [(seen[p].legacy_ticker or "")[:32] for p in pairs],
                "extra": [seen[p].has_external_id for p in pairs],
                "fiat": [seen[p].is_fiat for p in pairs],
                "now": now,
            },
        )
        for ticker, network, inserted, was_active in cur.fetchall():
            if inserted:
                result.added.append(f"{ticker}/{network}")
            elif not was_active:
                result.reactivated.append(f"{ticker}/{network}")
        cur.execute(_DEACTIVATE_SQL, {"now": now})
        result.deactivated = sorted(f"{t}/{n}" for t, n in cur.fetchall())
        result.added.sort()
        result.reactivated.sort()
        audit_record(
            object_type="currency",
            object_id="catalogue",
            kind="catalogue_refreshed",
            actor=actor,
            reason="ChangeNOW currency list",
            data=result.as_json(),
        )
    return result


def currency_catalogue_refresh(*, actor: Actor) -> CatalogueRefresh:
    """Read ChangeNOW's active currencies and store them; CurrencyError when it cannot."""
    from payouts.engine import changenow

    try:
        listed = changenow().get_currencies(active=True)
    except ProviderError as exc:
        raise CurrencyError(
            f"ChangeNOW's currency list could not be read ({exc}); the catalogue was left as it was"
        ) from exc
    return currency_catalogue_store(currencies=listed, actor=actor)


def currency_catalogue_ensure(*, actor: Actor) -> None:
    """Load the list once if the table is empty (the first client of a fresh install)."""
    if Currency.objects.exists():
        return
    try:
        currency_catalogue_refresh(actor=actor)
    except CurrencyError as exc:
        raise CurrencyError(
            f"the currency list is not loaded yet and {exc}; run manage.py refresh_currencies "
            "once ChangeNOW can be reached"
        ) from exc
