"""The one rule for showing amounts to people: each asset at its precision, trailing zeros
trimmed to a minimum, thousands separators, zero written one way, tiny never shown as 0."""

from __future__ import annotations

from decimal import Decimal

import pytest

from payouts.formatting import amount_display, amount_text
from payouts.templatetags.bo_format import amount


@pytest.mark.parametrize(
    ("value", "asset", "text"),
    [
        ("17.980000000000000000", "usdt", "17.98"),
        ("20.000000000000000000", "usd", "20.00"),
        ("200", "usd", "200.00"),
        ("0.123456789", "usdt", "0.123457"),
        ("1234567.5", "usdt", "1,234,567.50"),
        ("0.050000000000000000", "eth", "0.05"),
        ("1.123456789012345678", "eth", "1.12345679"),
        ("12345678901.25", "eth", "12,345,678,901.25"),
        ("0.00012", "btc", "0.00012"),
        ("0", "eth", "0"),
        ("0", "usdt", "0.00"),
        ("0", "usd", "0.00"),
        ("-0.000000000", "eth", "0"),
        ("-5", "usdt", "-5.00"),
        ("-1234.5", "usd", "-1,234.50"),
        ("0.000000001", "eth", "< 0.00000001"),
        ("-0.0000001", "usdt", "> -0.000001"),
        (None, "eth", "—"),
    ],
)
def test_each_asset_is_shown_at_its_precision(value: str | None, asset: str, text: str) -> None:
    assert amount_text(None if value is None else Decimal(value), asset) == text


def test_a_rounded_amount_keeps_every_digit_for_the_tooltip() -> None:
    shown = amount_display(Decimal("1.123456789012345678"), "eth")
    assert shown == {"text": "1.12345679", "full": "1.123456789012345678", "rounded": True}
    exact = amount_display(Decimal("0.05000"), "eth")
    assert exact == {"text": "0.05", "full": "0.05", "rounded": False}


def test_the_template_filter_puts_the_full_value_on_hover_only_when_it_rounds() -> None:
    assert amount(Decimal("1.123456789012345678"), "eth") == (
        '<span class="bo-amount" title="1.123456789012345678">1.12345679</span>'
    )
    assert amount(Decimal("17.98"), "usdt") == '<span class="bo-amount">17.98</span>'
