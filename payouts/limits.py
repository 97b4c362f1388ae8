"""What ChangeNOW accepts for a pair: its range of fromAmount, read and cached briefly.

The sweeps size their orders to it (DESIGN 12.4) and the engine checks an order against it
before creating the exchange. A refusal for an amount (`out_of_range`,
`deposit_too_small`) drops the cached range, so the next sweep sizes with a fresh one.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.core.cache import cache

# Ranges move rarely; a few minutes keeps one read per pair per sweep interval or so.
RANGE_TTL_SECONDS = 300
# ChangeNOW's codes for "that amount, not that destination": re-checked at the next sweep.
AMOUNT_REFUSALS = frozenset({"out_of_range", "deposit_too_small", "max_amount_exceeded"})


@dataclass(frozen=True)
class PairRange:
    minimum: Decimal
    maximum: Decimal | None  # None: ChangeNOW sets no maximum

    def describe(self, asset: str) -> str:
        top = f"{self.maximum} {asset}" if self.maximum is not None else "no maximum"
        return f"{self.minimum} {asset} .. {top}"


def _key(pair: tuple[str, str, str, str]) -> str:
    return "changenow-range:" + ":".join(pair)


def exchange_range(
    *, from_currency: str, from_network: str, to_currency: str, to_network: str
) -> PairRange:
    """The pair's range, from the cache or ChangeNOW (a ProviderError when unreadable)."""
    from payouts.engine import changenow

    pair = (from_currency, from_network, to_currency, to_network)
    cached = cache.get(_key(pair))
    if cached is not None:
        low, high = cached
        return PairRange(Decimal(low), Decimal(high) if high is not None else None)
    read = changenow().get_range(
        from_currency, to_currency, from_network=from_network, to_network=to_network
    )
    if read.min_amount is None:
        # Without a minimum nothing can be sized: fall back to the dedicated endpoint.
        minimum = changenow().get_min_amount(
            from_currency, to_currency, from_network=from_network, to_network=to_network
        )
    else:
        minimum = read.min_amount
    found = PairRange(minimum, read.max_amount)
    high = str(found.maximum) if found.maximum is not None else None
    cache.set(_key(pair), (str(found.minimum), high), RANGE_TTL_SECONDS)
    return found


def exchange_range_forget(
    *, from_currency: str, from_network: str, to_currency: str, to_network: str
) -> None:
    cache.delete(_key((from_currency, from_network, to_currency, to_network)))
