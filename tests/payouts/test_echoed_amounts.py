"""ChangeNOW's JSON numbers may have been doubles: an echo within 10^-12 (relative) of our
amount is the same amount, a larger difference stops the order with both figures."""

from __future__ import annotations

from decimal import Decimal

import pytest

from backoffice.reconcile import reconcile_run
from integrations.assets import more_than, same_amount
from payouts.models import Accumulation
from tests.conftest import Control
from tests.payouts.test_engine import new_batch, run_to, step


@pytest.mark.parametrize(
    ("ours", "echoed", "same"),
    [
        ("0.08494307", "0.0849430700000001", True),
        ("0.08494307", "0.08494307", True),
        ("0.123456789012345678", "0.1234567890123457", True),  # 18 decimals through a double
        ("1000000", "1000000.0000001", True),
        ("0.08494307", "0.084943071", False),
        ("0.08494307", "0.0849431", False),
        ("0", "0", True),
        ("0", "0.000000000000000001", False),
    ],
)
def test_an_echo_is_the_same_amount_only_within_double_precision(
    ours: str, echoed: str, same: bool
) -> None:
    assert same_amount(Decimal(ours), Decimal(echoed)) is same


def test_more_than_ignores_a_double_rounding_above_ours() -> None:
    assert not more_than(Decimal("0.0849430700000001"), Decimal("0.08494307"))
    assert more_than(Decimal("0.0849431"), Decimal("0.08494307"))


@pytest.mark.django_db
def test_an_amount_echoed_through_a_double_does_not_stop_the_order(providers: Control) -> None:
    providers.config(echo_relative_error="1.2e-15")
    batch = new_batch()
    step("batch", batch.pk)
    batch.refresh_from_db()
    echoed = Decimal(str(providers.exchange(batch.exchange_id)["expectedAmountFrom"]))
    assert echoed != batch.eth_total  # the sandbox really echoes a different figure
    assert run_to("batch", batch.pk, providers, {"completed", "needs_attention"}) == "completed"
    assert reconcile_run() == {"ok": True, "breaches": []}


@pytest.mark.django_db
def test_a_real_difference_stops_the_order_with_both_figures(providers: Control) -> None:
    providers.config(echo_relative_error="0.000001")
    batch = new_batch()
    result = step("batch", batch.pk)
    batch.refresh_from_db()
    assert batch.state in ("needs_attention", "failed"), result
    assert str(batch.eth_total.normalize()) in batch.last_error
    assert "expects" in batch.last_error
    # No money left: the rows are either still held by the order or released, never lost.
    assert Accumulation.objects.filter(state__in=("converting", "pending")).count() == 4
