"""Conversion sweep and exact distribution.

Both are set-based: the number of statements does not depend on the number of rows.

Sweep: one conditional UPDATE moves the pending rows into the batch and writes the totals of
exactly the rows it moved onto the batch; rows committed after the statement started stay
pending for the next sweep. Single-flight through a transaction-scoped advisory lock.

Distribution: with A = amountTo quantized down to 6 decimals, every row gets
  usdt_i = floor_6dp(A * eth_i * (100 - fee_i) / 100 / sum(eth))
computed in integer base units inside PostgreSQL `numeric` (arbitrary precision; Python's
28-digit default context would round such products), and the platform keeps A - sum(usdt_i).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from batches.models import ConversionBatch
from integrations.assets import (
    AmountError,
    check_positive,
    format_amount,
    quantize_down,
    to_decimal,
)
from payouts.locks import advisory_lock
from payouts.models import Accumulation
from payouts.postings import batch_post_completed
from payouts.services import runtime_settings_get
from payouts.signals import engine_alert
from payouts.transitions import Actor, TransitionError, audit_record, check_move, transition

log = logging.getLogger(__name__)

# Any constant works as long as every sweeper uses the same one.
# A pending row locked elsewhere makes the sweep fail after this long (and retry at the next
# tick) rather than wait forever holding the sweep lock.
SWEEP_ROW_LOCK_TIMEOUT_MS = 5000

# USDT received can never sensibly exceed this multiple of the USD value credited for the
# batch: a larger figure means a wrong asset or unit (the "3,800x over-swap" lesson).
MAX_RECEIVED_TO_USD_RATIO = Decimal(10)

# Base-unit scales of the split: wei (10^18), micro-USDT (10^6), fee percent with 4 decimals.
_FEE_SCALE = 10_000  # fee_percent has 4 decimal places
_PERCENT_SCALE = 100 * _FEE_SCALE


class DistributionError(Exception):
    """The distribution cannot be applied; the batch must go to a human."""


@dataclass(frozen=True)
class SweepResult:
    """`batch_id`, `rows`, `eth` and `usd` describe the first batch created (or, when none
    was, what is pending); `batches` lists every batch the run created."""

    created: bool
    batch_id: str | None
    rows: int
    eth: Decimal
    usd: Decimal
    reason: str
    batches: tuple[SweptBatch, ...] = ()

    def as_json(self) -> dict[str, object]:
        return {
            "created": self.created,
            "batch_id": self.batch_id,
            "rows": self.rows,
            "eth": format_amount(self.eth),
            "usd": format_amount(self.usd),
            "reason": self.reason,
            "batches": [b.as_json() for b in self.batches],
        }


@dataclass(frozen=True)
class SweptBatch:
    batch_id: str
    rows: int
    eth: Decimal
    usd: Decimal

    def as_json(self) -> dict[str, object]:
        return {
            "batch_id": self.batch_id,
            "rows": self.rows,
            "eth": format_amount(self.eth),
            "usd": format_amount(self.usd),
        }


def _pending_stats() -> tuple[int, Decimal, Decimal, object]:
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*), coalesce(sum(eth), 0), coalesce(sum(usd), 0), min(created_at) "
            "FROM payouts_accumulation WHERE state = 'pending'"
        )
        count, eth, usd, oldest = cur.fetchone()
    return int(count), Decimal(eth), Decimal(usd), oldest


def batch_sweep(
    *,
    actor: Actor,
    dry_run: bool = False,
    minimum_eth: Decimal | None = None,
    maximum_eth: Decimal | None = None,
) -> SweepResult:
    """Reserve the pending rows into batches when the threshold (or max age) is reached.

    `minimum_eth` and `maximum_eth` are ChangeNOW's range for eth->usdt, supplied by the
    caller. Below the minimum nothing is swept. Above the maximum the rows are split, oldest
    first, into as many batches as needed (at most MAX_BATCHES_PER_SWEEP per run), each
    within the range: one statement per batch, whatever the number of rows. A remainder
    below the minimum waits for the next sweep; a single payment above the maximum stays
    pending and raises an alert (no batch can ever carry it).
    """
    check_move(Accumulation, "pending", "converting")
    with transaction.atomic(), advisory_lock("sweep:conversions", xact=True) as got:
        if not got:
            return SweepResult(False, None, 0, Decimal(0), Decimal(0), "busy")
        runtime = runtime_settings_get()
        count, eth, usd, oldest = _pending_stats()
        if runtime.conversions_paused:
            return SweepResult(False, None, count, eth, usd, "paused")
        if count == 0:
            return SweepResult(False, None, 0, eth, usd, "no_pending")
        threshold = runtime.conversion_threshold_usd
        max_age = timedelta(minutes=runtime.max_pending_age_minutes)
        if usd >= threshold:
            trigger = ConversionBatch.Trigger.THRESHOLD
        elif oldest is not None and timezone.now() - oldest >= max_age:
            trigger = ConversionBatch.Trigger.MAX_AGE
        else:
            return SweepResult(False, None, count, eth, usd, "below_threshold")
        if minimum_eth is not None and eth < minimum_eth:
            return SweepResult(False, None, count, eth, usd, "below_exchange_minimum")
        if dry_run:
            return SweepResult(False, None, count, eth, usd, f"dry_run:{trigger}")
        if maximum_eth is None or eth <= maximum_eth:
            batch_id = uuid.uuid4()
            moved = _move_pending_into_batch(
                batch_id=batch_id, threshold=threshold, trigger=trigger, expected=(count, eth, usd)
            )
            swept = [SweptBatch(str(batch_id), *moved)] if moved[0] else []
            empty = "no_pending"  # the rows were taken meanwhile
        else:
            empty = "no_batch_within_range"  # a remainder below the minimum, or rows above max
            swept = _split_pending_into_batches(
                threshold=threshold,
                trigger=trigger,
                minimum=minimum_eth or Decimal(0),
                maximum=maximum_eth,
            )
        if not swept:
            return SweepResult(False, None, count, eth, usd, empty)
        for batch in swept:
            audit_record(
                object_type="conversionbatch",
                object_id=batch.batch_id,
                kind="created",
                actor=actor,
                to_state=ConversionBatch.State.RESERVED,
                reason=f"sweep ({trigger})"
                + (f", 1 of {len(swept)} within the exchange maximum" if len(swept) > 1 else ""),
                data={
                    "rows": batch.rows,
                    "eth": batch.eth,
                    "usd": batch.usd,
                    "threshold_usd": threshold,
                    "maximum_eth": maximum_eth,
                    "accumulations": "pending -> converting",
                },
            )
    first = swept[0]
    return SweepResult(
        True, first.batch_id, first.rows, first.eth, first.usd, str(trigger), tuple(swept)
    )


_INSERT_BATCH_SQL = """
INSERT INTO batches_conversionbatch (
    id, state, row_count, exchange_id, payin_address, payin_extra_id, provider_status,
    last_error, last_error_code, retry_count, created_at, state_changed_at, eth_total,
    usd_total, threshold_usd, trigger
) VALUES (
    %(batch_id)s, 'reserved', %(rows)s, '', '', '', '', '', '', 0, now(), now(), %(eth)s,
    %(usd)s, %(threshold)s, %(trigger)s
)
"""

# One statement moves exactly the rows it updates (a conditional update: a row changed by
# someone else meanwhile is re-checked and skipped) and writes their totals on the batch.
_MOVE_SQL = """
WITH moved AS (
    UPDATE payouts_accumulation
    SET state = 'converting', batch_id = %(batch_id)s, state_changed_at = now()
    WHERE state = 'pending'
    RETURNING eth, usd
), totals AS (
    SELECT count(*) AS n, sum(eth) AS eth, sum(usd) AS usd FROM moved
)
UPDATE batches_conversionbatch AS b
SET row_count = totals.n, eth_total = totals.eth, usd_total = totals.usd
FROM totals
WHERE b.id = %(batch_id)s AND totals.n > 0
RETURNING b.row_count, b.eth_total, b.usd_total
"""


class _NothingMoved(Exception):
    pass


# At most this many batches per run: each split statement reads the remaining pending rows
# again, so a tiny maximum against a huge backlog is spread over several sweeps.
MAX_BATCHES_PER_SWEEP = 20

# The oldest pending rows whose running total stays within the maximum, each row within it
# too, moved into a new batch that carries their totals: one statement per batch. A prefix
# below the minimum inserts no batch, and the caller rolls the move back.
_SPLIT_SQL = """
WITH pick AS (
    SELECT id FROM (
        SELECT id, sum(eth) OVER (ORDER BY created_at, id) AS running
        FROM payouts_accumulation
        WHERE state = 'pending' AND eth <= %(maximum)s
    ) r
    WHERE running <= %(maximum)s
), moved AS (
    UPDATE payouts_accumulation AS a
    SET state = 'converting', batch_id = %(batch_id)s, state_changed_at = now()
    FROM pick
    WHERE a.id = pick.id AND a.state = 'pending'
    RETURNING a.eth, a.usd
), totals AS (
    SELECT count(*) AS n, sum(eth) AS eth, sum(usd) AS usd FROM moved
)
INSERT INTO batches_conversionbatch (
    id, state, row_count, exchange_id, payin_address, payin_extra_id, provider_status,
    last_error, last_error_code, retry_count, created_at, state_changed_at, eth_total,
    usd_total, threshold_usd, trigger
)
SELECT %(batch_id)s, 'reserved', n, '', '', '', '', '', '', 0, now(), now(), eth, usd,
       %(threshold)s, %(trigger)s
FROM totals
WHERE n > 0 AND eth >= %(minimum)s
RETURNING row_count, eth_total, usd_total
"""
_ABOVE_MAXIMUM_SQL = """
SELECT count(*), coalesce(sum(eth), 0) FROM payouts_accumulation
WHERE state = 'pending' AND eth > %(maximum)s
"""


def _split_pending_into_batches(
    *, threshold: Decimal, trigger: str, minimum: Decimal, maximum: Decimal
) -> list[SweptBatch]:
    swept: list[SweptBatch] = []
    with connection.cursor() as cur:
        cur.execute(f"SET LOCAL lock_timeout = {int(SWEEP_ROW_LOCK_TIMEOUT_MS)}")
        for _ in range(MAX_BATCHES_PER_SWEEP):
            batch_id = uuid.uuid4()
            try:
                with transaction.atomic():
                    cur.execute(
                        _SPLIT_SQL,
                        {
                            "batch_id": batch_id,
                            "maximum": maximum,
                            "minimum": minimum,
                            "threshold": threshold,
                            "trigger": trigger,
                        },
                    )
                    moved = cur.fetchone()
                    if moved is None:
                        raise _NothingMoved  # nothing left, or a remainder below the minimum
            except _NothingMoved:
                break
            swept.append(
                SweptBatch(str(batch_id), int(moved[0]), Decimal(moved[1]), Decimal(moved[2]))
            )
        cur.execute(_ABOVE_MAXIMUM_SQL, {"maximum": maximum})
        above, above_eth = cur.fetchone()
    if above:
        _alert_above_maximum(rows=int(above), eth=Decimal(above_eth), maximum=maximum)
    return swept


def _alert_above_maximum(*, rows: int, eth: Decimal, maximum: Decimal) -> None:
    engine_alert.send(
        sender=__name__,
        key="sweep:above_exchange_maximum",
        kind="above_exchange_maximum",
        message=f"{rows} pending payment(s) of {format_amount(eth)} ETH in all are each above "
        f"ChangeNOW's maximum of {format_amount(maximum)} ETH for eth->usdt: no batch can "
        "carry them; they stay pending until the maximum allows them or a person decides",
    )


def _move_pending_into_batch(
    *,
    batch_id: uuid.UUID,
    threshold: Decimal,
    trigger: str,
    expected: tuple[int, Decimal, Decimal],
) -> tuple[int, Decimal, Decimal]:
    """Insert the batch (with the totals just read, to satisfy its constraints) and move the
    pending rows into it; the batch then carries the totals of exactly what moved."""
    rows, eth, usd = expected
    try:
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute(
                _INSERT_BATCH_SQL,
                {
                    "batch_id": batch_id,
                    "rows": rows,
                    "eth": eth,
                    "usd": usd,
                    "threshold": threshold,
                    "trigger": trigger,
                },
            )
            cur.execute(f"SET LOCAL lock_timeout = {int(SWEEP_ROW_LOCK_TIMEOUT_MS)}")
            cur.execute(_MOVE_SQL, {"batch_id": batch_id})
            moved = cur.fetchone()
            if moved is None:
                raise _NothingMoved  # roll the empty batch back: it must never exist
    except _NothingMoved:
        return 0, Decimal(0), Decimal(0)
    return int(moved[0]), Decimal(moved[1]), Decimal(moved[2])


# --- distribution -----------------------------------------------------------------------


def split_exact(*, amount_micro: int, rows: Sequence[tuple[int, Decimal]]) -> list[int]:
    """Reference split in pure integers: `rows` are (eth_wei, fee_percent); returns each
    row's micro-USDT. The database does the same arithmetic for real batches."""
    total_wei = sum(wei for wei, _fee in rows)
    if total_wei <= 0:
        raise DistributionError("a batch without ETH cannot be distributed")
    denominator = total_wei * _PERCENT_SCALE
    shares = []
    for wei, fee in rows:
        keep = int((Decimal(100) - fee) * _FEE_SCALE)
        shares.append(amount_micro * wei * keep // denominator)
    return shares


@dataclass(frozen=True)
class DistributionResult:
    batch_id: str
    applied: bool
    rows: int
    usdt_received: Decimal
    clients_usdt: Decimal
    platform_usdt: Decimal
    exchange_dust: Decimal


_DISTRIBUTE_SQL = """
WITH total AS (
    SELECT sum(eth) AS eth FROM payouts_accumulation
    WHERE batch_id = %(batch_id)s AND state = 'converting'
), moved AS (
    UPDATE payouts_accumulation AS a
    SET usdt = div(
            %(amount_micro)s::numeric * (a.eth * 1000000000000000000)
                * ((100 - a.fee_percent) * %(fee_scale)s),
            (SELECT eth FROM total) * 1000000000000000000 * %(percent_scale)s
        ) * 0.000001,
        state = 'converted',
        state_changed_at = now()
    WHERE a.batch_id = %(batch_id)s AND a.state = 'converting'
    RETURNING a.client_id, a.eth, a.usdt
)
INSERT INTO batch_client_totals (client_id, n, eth, usdt)
SELECT client_id, count(*), sum(eth), sum(usdt) FROM moved GROUP BY client_id
"""
# Per-client totals of the rows just moved, kept for the batch's ledger posting in the same
# transaction (it then reads 10,000 client lines, not 1,000,000 rows again).
_CLIENT_TOTALS_SQL = """
CREATE TEMP TABLE IF NOT EXISTS batch_client_totals (
    client_id bigint PRIMARY KEY, n bigint NOT NULL, eth numeric NOT NULL, usdt numeric NOT NULL
) ON COMMIT DROP;
TRUNCATE batch_client_totals;
"""
_TOTALS_SQL = """
SELECT coalesce(sum(n), 0), coalesce(sum(eth), 0), coalesce(sum(usdt), 0)
FROM batch_client_totals
"""


def batch_distribute(
    *, batch_id: uuid.UUID | str, amount_to: object, actor: Actor, reason: str = ""
) -> DistributionResult:
    """Complete a finished batch: split `amount_to` USDT over its rows exactly, keep the
    platform's part apart, and mark the batch completed, all in one transaction.

    A second call on a completed batch is a no-op that reports the stored figures.
    """
    check_move(Accumulation, "converting", "converted")
    started = time.perf_counter()
    try:
        raw = check_positive(to_decimal(amount_to, field="amountTo"), field="amountTo")
    except AmountError as exc:
        raise DistributionError(str(exc)) from None
    with transaction.atomic():
        batch = ConversionBatch.objects.select_for_update().get(pk=batch_id)
        if batch.state == ConversionBatch.State.COMPLETED:
            return DistributionResult(
                batch_id=str(batch.pk),
                applied=False,
                rows=batch.row_count,
                usdt_received=batch.usdt_received or Decimal(0),
                clients_usdt=(batch.usdt_received or Decimal(0)) - (batch.platform_usdt or 0),
                platform_usdt=batch.platform_usdt or Decimal(0),
                exchange_dust=batch.exchange_dust or Decimal(0),
            )
        check_move(ConversionBatch, batch.state, ConversionBatch.State.COMPLETED)
        received = quantize_down(raw, "usdt")
        dust = raw - received
        if received > batch.usd_total * MAX_RECEIVED_TO_USD_RATIO:
            raise DistributionError(
                f"{received} USDT received for {batch.usd_total} USD of payments: refusing an "
                "implausible amount (wrong asset or unit?)"
            )
        amount_micro = int(received.scaleb(6))
        with connection.cursor() as cur:
            cur.execute(_CLIENT_TOTALS_SQL)
            cur.execute(
                _DISTRIBUTE_SQL,
                {
                    "batch_id": batch.pk,
                    "amount_micro": amount_micro,
                    "fee_scale": _FEE_SCALE,
                    "percent_scale": _PERCENT_SCALE,
                },
            )
            cur.execute(_TOTALS_SQL)
            n, eth_sum, usdt_sum = cur.fetchone()
        eth_sum, usdt_sum = Decimal(eth_sum), Decimal(usdt_sum)
        if n != batch.row_count or eth_sum != batch.eth_total:
            raise DistributionError(
                f"batch {batch.pk} has {n} converting rows / {eth_sum} ETH, expected "
                f"{batch.row_count} / {batch.eth_total}"
            )
        platform = received - usdt_sum
        if platform < 0 or usdt_sum + platform != received:
            raise DistributionError(f"split of {received} gave {usdt_sum} to clients")
        transition(
            model=ConversionBatch,
            pk=batch.pk,
            to_state=ConversionBatch.State.COMPLETED,
            actor=actor,
            reason=reason or "exchange finished",
            updates={
                "usdt_received_raw": raw,
                "usdt_received": received,
                "exchange_dust": dust,
                "platform_usdt": platform,
            },
            data={
                "usdt_received": received,
                "clients_usdt": usdt_sum,
                "platform_usdt": platform,
                "exchange_dust": dust,
                "rows": n,
                "accumulations": "converting -> converted",
            },
        )
        batch.refresh_from_db()
        batch_post_completed(batch=batch, actor=actor)
    # Operators (and the pipeline benchmark) read the step's duration here.
    log.info(
        "distributed batch %s: %d rows in %.1f ms",
        batch.pk,
        n,
        (time.perf_counter() - started) * 1000,
        extra={"batch_id": str(batch.pk), "rows": int(n)},
    )
    return DistributionResult(
        batch_id=str(batch.pk),
        applied=True,
        rows=int(n),
        usdt_received=received,
        clients_usdt=usdt_sum,
        platform_usdt=platform,
        exchange_dust=dust,
    )


def batch_transition(
    *,
    batch_id: uuid.UUID | str,
    to_state: str,
    actor: Actor,
    reason: str = "",
    data: dict[str, object] | None = None,
    updates: dict[str, object] | None = None,
) -> ConversionBatch:
    if to_state == ConversionBatch.State.COMPLETED:
        raise TransitionError("a batch completes only through batch_distribute")
    return transition(
        model=ConversionBatch,
        pk=batch_id,
        to_state=to_state,
        actor=actor,
        reason=reason,
        data=data,
        updates=updates,
    )
