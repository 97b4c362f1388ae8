"""The payout kind of funded order: USDT from the host wallet to the client's destination."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from payouts.engine import ExchangeSpec, Funding, OrderKind
from payouts.models import Payout
from payouts.services import (
    PAYOUT_FROM,
    payout_complete,
    payout_is_direct,
)
from payouts.transitions import Actor


class PayoutKind(OrderKind):
    name = "payout"
    link_field = "payout"
    model = Payout
    rows_state = "paying"
    release_state = "converted"

    def exchange_spec(self, order: Payout) -> ExchangeSpec | None:
        if payout_is_direct(currency=order.currency, network=order.network):
            return None
        return ExchangeSpec(
            from_currency=PAYOUT_FROM[0],
            from_network=PAYOUT_FROM[1],
            to_currency=order.currency,
            to_network=order.network,
            amount_from=order.usdt_amount,
            address=order.address,
            extra_id=order.extra_id,
        )

    def funding(self, order: Payout) -> Funding:
        return Funding(asset="usdt", amount=order.usdt_amount)

    def direct_destination(self, order: Payout) -> str:
        return order.address

    def complete(self, *, order_id: Any, amount_to: Decimal | None, actor: Actor) -> None:
        payout_complete(payout_id=order_id, amount_to=amount_to, actor=actor)
