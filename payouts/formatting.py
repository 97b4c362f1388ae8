"""One rule for showing amounts to people, on every page and report (CSV keeps every digit).

Each asset at its own precision: ETH (and other coins) up to 8 decimals, USDT 6, USD 2;
trailing zeros trimmed down to a minimum (2 for USD and USDT, none for coins); thousands
separators; the full value (all 18 decimals for ETH) in a tooltip whenever the text rounds.
Zero is written the same everywhere ("0", "0.00" for USD and USDT); a non-zero amount too
small for the precision says so ("< 0.00000001") rather than pass for zero.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from integrations.assets import format_amount

PLACES = {"usd": 2, "usdt": 6, "usdc": 6, "eth": 8}
MIN_PLACES = {"usd": 2, "usdt": 2, "usdc": 2}
DEFAULT_PLACES = 8


def _group(whole: str) -> str:
    sign = "-" if whole.startswith("-") else ""
    digits = whole.lstrip("-")
    return sign + f"{int(digits):,}" if digits else whole


def amount_text(value: Decimal | int | str | None, asset: str = "") -> str:
    """'1,234.5678 ETH'-style text without the asset name; '—' for no value."""
    if value is None or value == "":
        return "—"
    amount = Decimal(value)
    asset = (asset or "").lower()
    places = PLACES.get(asset, DEFAULT_PLACES)
    minimum = MIN_PLACES.get(asset, 0)
    step = Decimal(1).scaleb(-places)
    shown = amount.quantize(step, rounding=ROUND_HALF_EVEN)
    if shown == 0 and amount != 0:
        return f"{'> -' if amount < 0 else '< '}{format(step, 'f')}"
    text = format(shown, "f")
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0")
    frac = frac + "0" * max(0, minimum - len(frac))
    if whole in ("-0", "") and not frac.strip("0"):
        whole = "0"  # no "-0"
    grouped = _group(whole)
    return f"{grouped}.{frac}" if frac else grouped


def amount_display(value: Decimal | int | str | None, asset: str = "") -> dict[str, object]:
    """{"text", "full", "rounded"}: the text, every digit, and whether the text rounds."""
    text = amount_text(value, asset)
    if value is None or value == "":
        return {"text": text, "full": "", "rounded": False}
    amount = Decimal(value)
    step = Decimal(1).scaleb(-PLACES.get((asset or "").lower(), DEFAULT_PLACES))
    return {
        "text": text,
        "full": format_amount(amount),
        "rounded": amount.quantize(step, rounding=ROUND_HALF_EVEN) != amount,
    }
