"""Django-Q2 tasks of the batches app: they only call services."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction

from batches.services import SweepResult, batch_sweep
from integrations.errors import ProviderError
from payouts.engine import changenow, enqueue_advance
from payouts.transitions import Actor


def exchange_minimum_eth() -> Decimal:
    """ChangeNOW's minimum for eth->usdt; a failure to read it fails the sweep loudly."""
    return changenow().get_min_amount("eth", "usdt", from_network="eth", to_network="eth")


def conversion_sweep(*, actor: Actor, dry_run: bool = False) -> SweepResult:
    try:
        minimum = exchange_minimum_eth()
    except ProviderError as exc:
        return SweepResult(False, None, 0, Decimal(0), Decimal(0), f"minimum_unavailable: {exc}")
    result = batch_sweep(actor=actor, dry_run=dry_run, minimum_eth=minimum)
    if result.created:
        with transaction.atomic():
            enqueue_advance(kind="batch", order_id=result.batch_id)
    return result


def sweep_conversions() -> dict[str, object]:
    return conversion_sweep(actor=Actor.system("conversion_sweep")).as_json()
