"""Assets, their decimals, and the one set of amount checks every boundary uses.

Amounts are Decimal everywhere. A value is quantized to its asset's decimals only at a
boundary (a provider answer, an on-chain amount) and always *down*: the platform never
credits or sends more than it has.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal, InvalidOperation

# Decimals of the assets the platform handles; extend as clients are onboarded.
ASSET_DECIMALS: dict[str, int] = {
    "eth": 18,
    "usdt": 6,
    "usdc": 6,
    "btc": 8,
    "ltc": 8,
    "bch": 8,
    "doge": 8,
    "xmr": 12,
    "trx": 6,
    "sol": 9,
    "bnb": 18,
    "matic": 18,
    "xrp": 6,
    "usd": 2,
}

# The largest amount any single value may carry: far above any real payment, far below
# what the amount columns (38 digits, 18 decimals) can hold.
MAX_AMOUNT = Decimal("1000000000")


class AmountError(ValueError):
    """An amount that must never enter the books: not a number, not positive, absurd."""


def decimals_of(asset: str) -> int:
    try:
        return ASSET_DECIMALS[asset.lower()]
    except KeyError:
        raise AmountError(f"unknown asset {asset!r}: add it to ASSET_DECIMALS") from None


def to_decimal(value: object, *, field: str = "amount") -> Decimal:
    """Parse a value into a finite Decimal. Floats are refused: they already lost precision."""
    if isinstance(value, bool | float):
        raise AmountError(f"{field}: floats are not accepted, send a decimal string")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int | str):
        try:
            result = Decimal(str(value).strip())
        except InvalidOperation:
            raise AmountError(f"{field}: {value!r} is not a number") from None
    else:
        raise AmountError(f"{field}: {type(value).__name__} is not a number")
    if not result.is_finite():
        raise AmountError(f"{field}: {value!r} is not finite")
    return result


def check_positive(value: Decimal, *, field: str, maximum: Decimal = MAX_AMOUNT) -> Decimal:
    if not value.is_finite():
        raise AmountError(f"{field}: {value} is not finite")
    if value <= 0:
        raise AmountError(f"{field}: {value} is not positive")
    if value > maximum:
        raise AmountError(f"{field}: {value} exceeds the sanity limit {maximum}")
    return value


def quantize_down(value: Decimal, asset: str) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-decimals_of(asset)), rounding=ROUND_DOWN)


def to_base_units(value: Decimal, asset: str) -> int:
    """Exact conversion to integer base units (wei, micro-USDT); refuses to truncate."""
    places = decimals_of(asset)
    scaled = value.scaleb(places)
    if scaled != scaled.to_integral_value():
        raise AmountError(f"{value} {asset} has more than {places} decimals")
    return int(scaled)


def from_base_units(units: int, asset: str) -> Decimal:
    return Decimal(units).scaleb(-decimals_of(asset))


def format_amount(value: Decimal | int) -> str:
    """Plain decimal string without exponent or trailing zeros ("0.5", not "5E-1")."""
    value = Decimal(value)
    if value == value.to_integral_value():
        return str(value.quantize(Decimal(1)))
    return format(value.normalize(), "f")


# ChangeNOW's JSON numbers may have been doubles on its side: 0.08494307 can come back as
# 0.0849430700000001. A double carries 15-17 significant digits, so a relative difference
# below 10^-12 is the same amount written twice; anything larger is a real difference.
ECHO_RELATIVE_TOLERANCE = Decimal("1e-12")


def same_amount(ours: Decimal, echoed: Decimal) -> bool:
    """True when ``echoed`` (a provider's copy of ``ours``) is the same amount as far as a
    JSON double can carry it (DESIGN 12.4)."""
    if ours == echoed:
        return True
    scale = max(abs(ours), abs(echoed))
    return abs(ours - echoed) < scale * ECHO_RELATIVE_TOLERANCE


def more_than(echoed: Decimal, ours: Decimal) -> bool:
    """``echoed`` is really more than ``ours``: larger, and not the same amount."""
    return echoed > ours and not same_amount(ours, echoed)
