"""Django-Q2 tasks of the payouts app: they take ids and call services."""

from __future__ import annotations

from integrations.errors import ProviderError
from payouts.engine import order_advance, orders_advance_all
from payouts.limits import PairRange, exchange_range
from payouts.payout_sweep import payout_sweep
from payouts.services import PAYOUT_FROM
from payouts.transitions import Actor


def advance_order(kind: str, order_id: str) -> dict[str, str]:
    return order_advance(kind=kind, order_id=order_id, actor=Actor.system("advance")).as_json()


def advance_open_orders() -> dict[str, object]:
    results = orders_advance_all(actor=Actor.system("advance"))
    moved = [r.as_json() for r in results if r.moved]
    return {"advanced": len(moved), "orders": moved}


def exchange_range_usdt(currency: str, network: str) -> PairRange | None:
    """ChangeNOW's range of USDT for a payout pair; None when it cannot be read right now."""
    try:
        return exchange_range(
            from_currency=PAYOUT_FROM[0],
            from_network=PAYOUT_FROM[1],
            to_currency=currency,
            to_network=network,
        )
    except ProviderError:
        return None


def sweep_payouts(dry_run: bool = False) -> dict[str, object]:
    return payout_sweep(
        actor=Actor.system("payout_sweep"), dry_run=dry_run, range_for=exchange_range_usdt
    ).as_json()
