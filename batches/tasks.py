"""Django-Q2 tasks of the batches app: they only call services."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction

from batches.services import SweepResult, batch_sweep
from integrations.errors import ProviderError
from payouts.engine import enqueue_advance
from payouts.limits import exchange_range
from payouts.transitions import Actor


def conversion_sweep(*, actor: Actor, dry_run: bool = False) -> SweepResult:
    """The sweep sized to ChangeNOW's eth->usdt range; an unreadable range sweeps nothing."""
    try:
        limits = exchange_range(
            from_currency="eth", from_network="eth", to_currency="usdt", to_network="eth"
        )
    except ProviderError as exc:
        return SweepResult(False, None, 0, Decimal(0), Decimal(0), f"range_unavailable: {exc}")
    result = batch_sweep(
        actor=actor, dry_run=dry_run, minimum_eth=limits.minimum, maximum_eth=limits.maximum
    )
    if result.created:
        with transaction.atomic():
            for batch in result.batches:
                enqueue_advance(kind="batch", order_id=batch.batch_id)
    return result


def sweep_conversions() -> dict[str, object]:
    return conversion_sweep(actor=Actor.system("conversion_sweep")).as_json()
