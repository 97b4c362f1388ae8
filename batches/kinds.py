"""The batch kind of funded order: ETH from the host wallet into one ETH->USDT exchange whose
USDT comes back to the host wallet and is distributed on completion."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from batches.models import ConversionBatch
from batches.services import DistributionError, batch_distribute
from payouts.engine import (
    EngineError,
    ExchangeSpec,
    Funding,
    OrderKind,
    host_address,
)
from payouts.transitions import Actor


class BatchKind(OrderKind):
    name = "batch"
    link_field = "batch"
    model = ConversionBatch
    rows_state = "converting"
    release_state = "pending"

    def exchange_spec(self, order: ConversionBatch) -> ExchangeSpec:
        return ExchangeSpec(
            from_currency="eth",
            from_network="eth",
            to_currency="usdt",
            to_network="eth",
            amount_from=order.eth_total,
            address=host_address(),
        )

    def funding(self, order: ConversionBatch) -> Funding:
        return Funding(asset="eth", amount=order.eth_total)

    def complete(self, *, order_id: Any, amount_to: Decimal | None, actor: Actor) -> None:
        if amount_to is None:
            raise EngineError("a finished exchange without amountTo cannot be distributed")
        try:
            batch_distribute(batch_id=order_id, amount_to=amount_to, actor=actor)
        except DistributionError as exc:
            raise EngineError(f"distribution refused: {exc}") from exc
        # No payout sweep from here: the payout schedule decides when clients are paid
        # (DESIGN.md section 2: "on a schedule"), so a client is paid at most once per
        # payout interval however many batches complete meanwhile. A sweep after every
        # batch made one payout per client per batch, each a send from the one wallet.
