"""Operations: `reconcile` proves every unit of money is accounted for (DESIGN.md section 6).

Each check is one set-based query returning the offending objects, so the cost does not
grow with the number of healthy rows beyond a scan, and a breach names the object and the
figures that disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db import connection


@dataclass(frozen=True)
class Breach:
    invariant: str
    object: str
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"invariant": self.invariant, "object": self.object, "detail": self.detail}


# (invariant, SQL returning (object, detail) rows)
CHECKS: tuple[tuple[str, str], ...] = (
    (
        "1 state agrees with links",
        """
        SELECT 'accumulation:' || a.id,
               a.state || ' but batch ' || coalesce(b.state, 'none') || ', payout '
               || coalesce(p.state, 'none')
        FROM payouts_accumulation a
        LEFT JOIN batches_conversionbatch b ON b.id = a.batch_id
        LEFT JOIN payouts_payout p ON p.id = a.payout_id
        WHERE (a.state = 'pending' AND (a.batch_id IS NOT NULL OR a.payout_id IS NOT NULL))
           OR (a.state = 'converting' AND (b.state IS NULL OR b.state NOT IN
                 ('reserved', 'exchange_created', 'funds_sent', 'converting',
                  'needs_attention')))
           OR (a.state IN ('converted', 'paying', 'paid')
               AND (a.usdt IS NULL OR b.state IS DISTINCT FROM 'completed'))
           OR (a.state = 'paying' AND (p.state IS NULL OR p.state NOT IN
                 ('reserved', 'exchange_created', 'funds_sent', 'converting',
                  'needs_attention')))
           OR (a.state = 'paid' AND p.state IS DISTINCT FROM 'completed')
           OR (a.state = 'converted' AND a.payout_id IS NOT NULL)
        """,
    ),
    (
        "2 batch rows match its totals",
        """
        SELECT 'batch:' || b.id,
               'rows ' || coalesce(r.n, 0) || ' / ' || coalesce(r.eth, 0) || ' ETH, batch says '
               || b.row_count || ' / ' || b.eth_total
        FROM batches_conversionbatch b
        LEFT JOIN (
            SELECT batch_id, count(*) AS n, sum(eth) AS eth FROM payouts_accumulation
            WHERE batch_id IS NOT NULL GROUP BY batch_id
        ) r ON r.batch_id = b.id
        WHERE b.state NOT IN ('failed', 'force_closed')
          AND (coalesce(r.n, 0) <> b.row_count OR coalesce(r.eth, 0) <> b.eth_total)
        """,
    ),
    (
        "2 completed batch split sums to the amount received",
        """
        SELECT 'batch:' || b.id,
               'clients ' || coalesce(r.usdt, 0) || ' + platform ' || b.platform_usdt
               || ' <> received ' || b.usdt_received
        FROM batches_conversionbatch b
        LEFT JOIN (
            SELECT batch_id, sum(usdt) AS usdt FROM payouts_accumulation
            WHERE batch_id IS NOT NULL GROUP BY batch_id
        ) r ON r.batch_id = b.id
        WHERE b.state = 'completed'
          AND coalesce(r.usdt, 0) + b.platform_usdt <> b.usdt_received
        """,
    ),
    (
        "2 batch sent exactly its ETH",
        """
        SELECT 'batch:' || b.id, 'transfer ' || t.tx_hash || ' sent ' || t.amount || ' '
               || t.asset || ' to ' || t.to_address || ', batch holds ' || b.eth_total
               || ' ETH for ' || b.payin_address
        FROM batches_conversionbatch b JOIN payouts_transfer t ON t.batch_id = b.id
        WHERE t.state IN ('signed', 'broadcast', 'mined')
          AND (t.amount <> b.eth_total OR t.asset <> 'eth' OR t.to_address <> b.payin_address)
        """,
    ),
    (
        "3 payout rows match its amount",
        """
        SELECT 'payout:' || p.id,
               'rows ' || coalesce(r.n, 0) || ' / ' || coalesce(r.usdt, 0)
               || ' USDT, payout says ' || p.row_count || ' / ' || p.usdt_amount
        FROM payouts_payout p
        LEFT JOIN (
            SELECT payout_id, count(*) AS n, sum(usdt) AS usdt FROM payouts_accumulation
            WHERE payout_id IS NOT NULL GROUP BY payout_id
        ) r ON r.payout_id = p.id
        WHERE p.state NOT IN ('failed', 'force_closed')
          AND (coalesce(r.n, 0) <> p.row_count OR coalesce(r.usdt, 0) <> p.usdt_amount)
        """,
    ),
    (
        "3 payout sent exactly its amount",
        """
        SELECT 'payout:' || p.id, 'transfer ' || t.tx_hash || ' sent ' || t.amount || ' '
               || t.asset || ', payout holds ' || p.usdt_amount || ' USDT'
        FROM payouts_payout p JOIN payouts_transfer t ON t.payout_id = p.id
        WHERE t.state IN ('signed', 'broadcast', 'mined')
          AND (t.amount <> p.usdt_amount OR t.asset <> 'usdt')
        """,
    ),
    (
        "4 at most one live transaction per order",
        """
        SELECT coalesce('batch:' || batch_id::text, 'payout:' || payout_id::text),
               count(*) || ' live transfers'
        FROM payouts_transfer WHERE state IN ('signed', 'broadcast', 'mined')
        GROUP BY batch_id, payout_id HAVING count(*) > 1
        """,
    ),
    (
        "4 funds only to a stored payin address",
        """
        SELECT 'payout:' || p.id, 'transfer to ' || t.to_address || ' but destination is '
               || CASE WHEN p.currency = 'usdt' AND p.network = 'eth' THEN p.address
                       ELSE p.payin_address END
        FROM payouts_payout p JOIN payouts_transfer t ON t.payout_id = p.id
        WHERE t.state IN ('signed', 'broadcast', 'mined')
          AND t.to_address <> CASE WHEN p.currency = 'usdt' AND p.network = 'eth' THEN p.address
                                   ELSE p.payin_address END
        """,
    ),
    (
        "5 terminal orders never change",
        """
        SELECT e.object_type || ':' || e.object_id,
               e.kind || ' ' || e.from_state || '->' || e.to_state || ' at ' || e.created_at
               || ' after it became ' || t.to_state
        FROM payouts_auditevent e
        JOIN (
            SELECT object_type, object_id, min(id) AS id, min(to_state) AS to_state
            FROM payouts_auditevent
            WHERE object_type IN ('conversionbatch', 'payout') AND kind = 'transition'
              AND to_state IN ('completed', 'failed', 'force_closed')
            GROUP BY object_type, object_id
        ) t ON t.object_type = e.object_type AND t.object_id = e.object_id
        WHERE e.id > t.id AND e.kind = 'transition'
        """,
    ),
    (
        "6 conservation of ETH and USDT",
        """
        SELECT 'totals', 'credited ' || credited || ' ETH <> accounted ' || accounted
        FROM (
            SELECT sum(eth) AS credited,
                   sum(eth) FILTER (WHERE state IN ('pending', 'converting', 'converted',
                                                    'paying', 'paid', 'written_off'))
                   AS accounted
            FROM payouts_accumulation
        ) s WHERE credited IS DISTINCT FROM accounted
        UNION ALL
        SELECT 'totals', 'USDT received ' || received || ' <> clients ' || clients
               || ' + platform ' || platform
        FROM (
            SELECT coalesce(sum(b.usdt_received), 0) AS received,
                   coalesce(sum(b.platform_usdt), 0) AS platform,
                   (SELECT coalesce(sum(a.usdt), 0) FROM payouts_accumulation a
                    JOIN batches_conversionbatch x ON x.id = a.batch_id
                    WHERE x.state = 'completed') AS clients
            FROM batches_conversionbatch b WHERE b.state = 'completed'
        ) u WHERE received <> clients + platform
        """,
    ),
)


def reconcile_breaches(*, limit_per_check: int = 100) -> list[Breach]:
    breaches: list[Breach] = []
    with connection.cursor() as cur:
        for invariant, sql in CHECKS:
            cur.execute(f"{sql} LIMIT %s", [limit_per_check])  # noqa: S608 - constant SQL
            breaches.extend(Breach(invariant, str(obj), str(detail)) for obj, detail in cur)
    return breaches


def reconcile_run() -> dict[str, Any]:
    breaches = reconcile_breaches()
    return {"ok": not breaches, "breaches": [b.as_json() for b in breaches]}


def watchdog_run() -> dict[str, Any]:
    """Placeholder until the watchdog lands: reports open orders needing attention."""
    from batches.models import ConversionBatch
    from payouts.models import Payout

    return {
        "needs_attention": ConversionBatch.objects.filter(state="needs_attention").count()
        + Payout.objects.filter(state="needs_attention").count()
    }
