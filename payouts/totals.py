"""Kept totals per accumulation state: read them, and fold their delta rows.

The rows are written by the database's own triggers (payouts.models.AccumulationTotal), in
the transaction of every statement that changes an accumulation, so no code path can move a
row and forget its total; reconcile's "kept totals equal the rows" check proves it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.db import connection, transaction

from payouts.locks import advisory_lock
from payouts.models import ACCUMULATION_STATES
from payouts.transitions import Actor, audit_record


@dataclass(frozen=True)
class StateTotal:
    count: int
    eth: Decimal
    usd: Decimal
    usdt: Decimal
    # Pending only; not a figure of the state, so equality ignores it.
    oldest: datetime | None = field(default=None, compare=False)


ZERO = StateTotal(0, Decimal(0), Decimal(0), Decimal(0))

# Summing the deltas is cheap: compaction keeps them to one row per state plus the
# statements since the last watchdog run (about one per payment credited meanwhile).
# The oldest pending payment comes from the start of acc_pending_idx (created_at first).
_TOTALS_SQL = """
SELECT state, sum(row_count), sum(eth), sum(usd), sum(usdt),
       CASE WHEN state = 'pending' THEN (
           SELECT min(created_at) FROM payouts_accumulation WHERE state = 'pending') END
FROM payouts_accumulationtotal GROUP BY state
"""

# Delete every delta this snapshot sees and insert their sums: rows appended meanwhile by
# other transactions are not seen, so not deleted, and stay as they are. Two folds at once
# cannot count a row twice (a row deleted by one is skipped by the other), the lock only
# spares the second the work.
_COMPACT_SQL = """
WITH folded AS (
    DELETE FROM payouts_accumulationtotal RETURNING state, row_count, eth, usd, usdt
), sums AS (
    SELECT state, sum(row_count) AS n, sum(eth) AS eth, sum(usd) AS usd, sum(usdt) AS usdt,
           count(*) AS deltas
    FROM folded GROUP BY state
), kept AS (
    INSERT INTO payouts_accumulationtotal (state, row_count, eth, usd, usdt)
    SELECT state, n, eth, usd, usdt FROM sums
    WHERE n <> 0 OR eth <> 0 OR usd <> 0 OR usdt <> 0
    RETURNING 1
)
SELECT coalesce((SELECT sum(deltas) FROM sums), 0), (SELECT count(*) FROM kept)
"""


def accumulation_totals() -> dict[str, StateTotal]:
    """Count, ETH, USD and USDT of the accumulations in each state, and the oldest pending
    payment's time, in one small query."""
    totals = dict.fromkeys(ACCUMULATION_STATES, ZERO)
    with connection.cursor() as cur:
        cur.execute(_TOTALS_SQL)
        for state, count, eth, usd, usdt, oldest in cur.fetchall():
            totals[state] = StateTotal(
                int(count), Decimal(eth), Decimal(usd), Decimal(usdt), oldest
            )
    return totals


def accumulation_totals_compact() -> dict[str, int]:
    """Fold the delta rows into one per state. Safe at any time, beside any writer."""
    with transaction.atomic(), advisory_lock("accumulation_totals_compact", xact=True) as got:
        if not got:
            return {"folded": 0, "kept": 0, "skipped": 1}
        with connection.cursor() as cur:
            cur.execute(_COMPACT_SQL)
            folded, kept = cur.fetchone()
    return {"folded": int(folded), "kept": int(kept), "skipped": 0}


# SHARE mode: no accumulation changes while the totals are recounted (intake waits about a
# second per million rows), reads go on.
_REBUILD_SQL = """
LOCK TABLE payouts_accumulation IN SHARE MODE;
DELETE FROM payouts_accumulationtotal;
INSERT INTO payouts_accumulationtotal (state, row_count, eth, usd, usdt)
SELECT state, count(*), sum(eth), sum(usd), coalesce(sum(usdt), 0)
FROM payouts_accumulation GROUP BY state;
"""


def _as_json(totals: dict[str, StateTotal]) -> dict[str, dict[str, str | int]]:
    return {
        state: {
            "count": t.count,
            "eth": f"{t.eth.normalize():f}",
            "usd": f"{t.usd.normalize():f}",
            "usdt": f"{t.usdt.normalize():f}",
        }
        for state, t in totals.items()
    }


def accumulation_totals_rebuild(*, actor: Actor, reason: str) -> dict[str, object]:
    """Recount the kept totals from the rows, when reconcile found them apart (a change made
    behind the triggers, a data-only restore). Moves no money: only the dashboard reads
    them. Audited with the figures before and after."""
    if not reason.strip():
        raise ValueError("a reason is required")
    with transaction.atomic():
        before = accumulation_totals()
        with connection.cursor() as cur:
            cur.execute(_REBUILD_SQL)
        after = accumulation_totals()
        changed = [s for s in ACCUMULATION_STATES if before[s] != after[s]]
        audit_record(
            object_type="accumulation_totals",
            object_id="all",
            kind="totals_rebuilt",
            actor=actor,
            reason=reason,
            data={"before": _as_json(before), "after": _as_json(after), "changed": changed},
        )
    return {"changed": changed, "totals": _as_json(after)}
