"""What each movement of money books in the ledger (DESIGN.md section 12.2).

Called by the code that changes state, inside its database transaction, so a posting and
its cause commit together. Intake is booked by a database trigger (ledger migration 0003).

- A funding transfer, once final on chain: what it paid moves from `host_wallet` to
  `in_transit:<order>`; its gas (gasUsed x effectiveGasPrice) to `network_fees`. A reverted
  transfer or a cancel books only its gas.
- A completed batch: ETH leaves the clients' accounts for the batch's `in_transit`; the USDT
  received comes into `host_wallet`, split between the clients and `platform_fees`.
- A completed payout: the client's USDT claim is settled against the payout's `in_transit`.
- A proved refund: what came back returns to `host_wallet`, the shortfall is a loss.
- A write-off: the clients' claim is cancelled; it absorbs what left for the order and the
  rest (funds that never left) becomes platform income.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.db.models import Sum

from ledger.models import LedgerTransaction
from ledger.services import (
    Line,
    account_balance,
    client_account,
    in_transit_account,
    ledger_post,
    ledger_post_select,
)
from payouts.models import Payout, Transfer
from payouts.transitions import Actor

WEI = Decimal("1e-18")
HOST = "host_wallet"


def _order_id(transfer: Transfer) -> Any:
    return transfer.batch_id or transfer.payout_id


def transfer_post_final(*, transfer: Transfer, actor: Actor) -> LedgerTransaction | None:
    """Book a transfer that became final: its payment if it took effect, its gas always."""
    lines: list[Line] = []
    asset = transfer.asset.lower()
    if transfer.state == Transfer.State.MINED:
        lines += [
            (in_transit_account(_order_id(transfer)), asset, transfer.amount),
            (HOST, asset, -transfer.amount),
        ]
        if _written_off(transfer):
            # The order's claim was written off while this payment could still mine: what
            # left is no longer the platform's income from that write-off.
            lines += [
                ("platform_fees", asset, transfer.amount),
                (in_transit_account(_order_id(transfer)), asset, -transfer.amount),
            ]
    gas = Decimal(transfer.gas_fee_wei or 0) * WEI
    if gas:
        lines += [("network_fees", "eth", gas), (HOST, "eth", -gas)]
    if not lines:
        return None
    order = f"batch {transfer.batch_id}" if transfer.batch_id else f"payout {transfer.payout_id}"
    return ledger_post(
        kind=LedgerTransaction.Kind.TRANSFER,
        lines=lines,
        actor=actor.name,
        memo=f"{transfer.state} transfer {transfer.mined_hash or transfer.tx_hash} for {order}",
        tx_hash=transfer.mined_hash or transfer.tx_hash,
        links={"transfer_id": transfer.pk},
    )


def _written_off(transfer: Transfer) -> bool:
    link = (
        {"batch_id": transfer.batch_id} if transfer.batch_id else {"payout_id": transfer.payout_id}
    )
    return LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.WRITE_OFF, **link).exists()


_BATCH_COMPLETED_SQL = """
SELECT 'in_transit:' || b.id::text AS name, 'eth' AS asset, -b.eth_total AS amount
FROM batches_conversionbatch b WHERE b.id = %(batch_id)s
UNION ALL
SELECT 'host_wallet', 'usdt', b.usdt_received
FROM batches_conversionbatch b WHERE b.id = %(batch_id)s
UNION ALL
SELECT 'platform_fees', 'usdt', -b.platform_usdt
FROM batches_conversionbatch b WHERE b.id = %(batch_id)s
UNION ALL
SELECT 'clients:' || c.reference, x.asset, x.amount
FROM batch_client_totals s
JOIN payouts_client c ON c.id = s.client_id
CROSS JOIN LATERAL (VALUES ('eth', s.eth), ('usdt', -s.usdt)) AS x(asset, amount)
"""


def batch_post_completed(*, batch: Any, actor: Actor) -> int:
    """Book a completed batch for all its clients in one statement; returns the legs. The
    clients' lines come from `batch_client_totals`, which the distribution filled with the
    totals of the rows it moved, in this same database transaction."""
    return ledger_post_select(
        kind=LedgerTransaction.Kind.BATCH_COMPLETED,
        lines_sql=_BATCH_COMPLETED_SQL,
        params={"batch_id": batch.pk},
        actor=actor.name,
        memo=f"batch {batch.pk}: {batch.eth_total} ETH -> {batch.usdt_received} USDT",
        links={"batch_id": batch.pk},
    )


def payout_post_completed(*, payout: Payout, actor: Actor) -> LedgerTransaction:
    reference = payout.client.reference
    return ledger_post(
        kind=LedgerTransaction.Kind.PAYOUT_COMPLETED,
        lines=[
            (client_account(reference), "usdt", payout.usdt_amount),
            (in_transit_account(payout.pk), "usdt", -payout.usdt_amount),
        ],
        actor=actor.name,
        memo=f"payout {payout.pk} of {payout.usdt_amount} USDT to {reference}",
        links={"payout_id": payout.pk},
    )


def _order_links(kind: Any, order_id: Any) -> dict[str, Any]:
    return {f"{kind.link_field}_id": order_id}


def order_post_refund(
    *, kind: Any, order: Any, asset: str, refund: Decimal, loss: Decimal, tx_hash: str, actor: Actor
) -> LedgerTransaction:
    """A refund proved on chain: what came back is in the host wallet again; the rest of the
    deposit is the platform's loss."""
    transit = in_transit_account(order.pk)
    lines: list[Line] = [(HOST, asset, refund), (transit, asset, -refund)]
    if loss:
        lines += [("losses", asset, loss), (transit, asset, -loss)]
    return ledger_post(
        kind=LedgerTransaction.Kind.REFUND,
        lines=lines,
        actor=actor.name,
        memo=f"refund {tx_hash} of {kind.name} {order.pk}: {refund} back, {loss} lost",
        tx_hash=tx_hash,
        links=_order_links(kind, order.pk),
    )


def order_covered(*, kind: Any, order_id: Any, asset: str) -> Decimal:
    """What left the host wallet for the order: booked in transit, or mined and not yet final
    (booked when it is)."""
    pending = Transfer.objects.filter(
        **{f"{kind.link_field}_id": order_id}, state=Transfer.State.MINED, final_at__isnull=True
    ).aggregate(total=Sum("amount"))["total"] or Decimal(0)
    return account_balance(in_transit_account(order_id), asset) + pending


_WRITE_OFF_SQL = """
SELECT 'clients:' || c.reference AS name, %(asset)s AS asset, sum(a.{column}) AS amount
FROM payouts_accumulation a JOIN payouts_client c ON c.id = a.client_id
WHERE a.{link}_id = %(order_id)s AND a.state = 'written_off'
GROUP BY c.reference
UNION ALL SELECT %(transit)s, %(asset)s, -%(covered)s::numeric
UNION ALL SELECT 'platform_fees', %(asset)s, %(covered)s::numeric - %(total)s::numeric
"""


def order_post_write_off(
    *, kind: Any, order: Any, total: Decimal, actor: Actor, reason: str
) -> int | None:
    """The order's rows were written off: cancel the clients' claim (`total`, all rows)."""
    asset = "eth" if kind.rows_state == "converting" else "usdt"
    if not total:
        return None
    covered = order_covered(kind=kind, order_id=order.pk, asset=asset)
    return ledger_post_select(
        kind=LedgerTransaction.Kind.WRITE_OFF,
        lines_sql=_WRITE_OFF_SQL.format(column=asset, link=kind.link_field),
        params={
            "asset": asset,
            "order_id": order.pk,
            "transit": in_transit_account(order.pk),
            "covered": str(covered),
            "total": str(total),
        },
        actor=actor.name,
        memo=f"write-off of {kind.name} {order.pk}: {total} {asset.upper()} ({reason[:200]})",
        links=_order_links(kind, order.pk),
    )
