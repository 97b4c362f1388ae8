"""The payout sweep: each client's converted USDT into payouts ChangeNOW accepts.

For every client holding converted USDT the sweep decides, in one pass, whether it is paid
now and, if not, why (below its threshold, below the pair's minimum, a payment above the
maximum, paused, a destination ChangeNOW refused, a currency it no longer offers...). The
reason is kept on the client (one statement for all of them) for its page, the clients list
and the dashboard. A client above the pair's maximum is split into several payouts, oldest
rows first, each within [min, max]: one statement per payout, never per row.

`out_of_range` and `deposit_too_small` are amount problems: they are re-checked at every
sweep with the range of the moment, never taken as a refused destination.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from integrations.assets import format_amount
from payouts.currencies import currency_pair_states
from payouts.limits import PairRange
from payouts.locks import advisory_lock
from payouts.models import Accumulation, Client, Payout
from payouts.planner import without_nested_loops
from payouts.services import payout_is_direct, runtime_settings_get
from payouts.transitions import Actor, audit_record, check_move

# At most this many payouts per client and run when splitting; the rest waits a sweep.
MAX_SPLIT_PAYOUTS = 20

# Failure codes after which paying the same destination again is pointless until a person
# changes it (an address ChangeNOW refuses, a pair it does not serve). Amount refusals are
# not among them.
DESTINATION_REFUSALS = frozenset({"not_valid_address", "pair_is_inactive", "not_valid_params"})

RangeFor = Callable[[str, str], PairRange | None]


@dataclass
class PayoutSweepResult:
    created: int = 0
    payouts: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"created": self.created, "payouts": self.payouts, "skipped": self.skipped}


@dataclass(frozen=True)
class _Candidate:
    client_id: int
    reference: str
    active: bool
    threshold: Decimal
    currency: str
    network: str
    rows: int
    usdt: Decimal
    largest: Decimal


_CANDIDATES_SQL = """
SELECT c.id, c.reference, c.active, c.payout_threshold_usd, c.payout_currency, c.payout_network,
       count(*), sum(a.usdt), max(a.usdt)
FROM payouts_accumulation a JOIN payouts_client c ON c.id = a.client_id
WHERE a.state = 'converted'
GROUP BY c.id
HAVING sum(a.usdt) > 0
ORDER BY c.id
"""

# Every client paid whole this run, in one statement: their converted rows move to a
# payout each, the payouts are inserted with the totals of what moved (the foreign key from
# the rows is checked at commit) and with the destination of the locked client row, and each
# gets its audit event. The query count does not depend on the number of clients or rows.
_RESERVE_WHOLE_SQL = """
WITH plan AS (
    SELECT * FROM unnest(%(client_ids)s::bigint[], %(payout_ids)s::uuid[]) AS p(client_id, id)
), moved AS (
    UPDATE payouts_accumulation AS a
    SET state = 'paying', payout_id = plan.id, state_changed_at = %(now)s
    FROM plan
    WHERE a.client_id = plan.client_id AND a.state = 'converted'
    RETURNING a.client_id, a.payout_id, a.usdt
), totals AS (
    SELECT payout_id, client_id, count(*) AS n, sum(usdt) AS usdt FROM moved
    GROUP BY payout_id, client_id
), made AS (
    INSERT INTO payouts_payout (
        id, client_id, state, row_count, usdt_amount, currency, network, address, extra_id,
        exchange_id, payin_address, payin_extra_id, provider_status, last_error,
        last_error_code, retry_count, created_at, state_changed_at
    )
    SELECT t.payout_id, c.id, 'reserved', t.n, t.usdt, c.payout_currency, c.payout_network,
           c.payout_address, c.payout_extra_id, '', '', '', '', '', '', 0, %(now)s, %(now)s
    FROM totals t JOIN payouts_client c ON c.id = t.client_id
    RETURNING id, client_id, row_count, usdt_amount, currency, network, address
), audit AS (
    INSERT INTO payouts_auditevent (
        object_type, object_id, kind, from_state, to_state, actor, user_id, reason, data,
        created_at
    )
    SELECT 'payout', m.id::text, 'created', '', 'reserved', %(actor)s, %(user_id)s::bigint,
           'payout sweep',
           jsonb_build_object(
               'client', c.reference, 'rows', m.row_count, 'usdt', m.usdt_amount::text,
               'destination', m.currency || '/' || m.network || ' ' || m.address,
               'accumulations', 'converted -> paying'
           ),
           %(now)s
    FROM made m JOIN payouts_client c ON c.id = m.client_id
)
SELECT m.id, m.client_id, m.row_count, m.usdt_amount FROM made m
"""

# Their client rows, locked first in a fixed order: a destination edited meanwhile waits
# for the sweep's commit, and the payout takes the destination the row holds now.
_LOCK_CLIENTS_SQL = """
SELECT id FROM payouts_client WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id FOR UPDATE
"""

# A sweep that created more payouts than this asks a worker to advance each of the first
# ones at once; the rest are taken by the engine's schedule (`advance_open_orders`), which
# walks every open order, so a large sweep does not flood the queue with one task each.
FOLLOWUPS_PER_SWEEP = 200

# The client's oldest converted rows whose running total stays within the maximum; the
# payout gets their totals, or none (and the caller rolls back) below the minimum.
_SPLIT_SQL = """
WITH pick AS (
    SELECT id FROM (
        SELECT id, sum(usdt) OVER (ORDER BY created_at, id) AS running
        FROM payouts_accumulation
        WHERE client_id = %(client_id)s AND state = 'converted' AND usdt <= %(maximum)s
    ) r
    WHERE running <= %(maximum)s
), moved AS (
    UPDATE payouts_accumulation AS a
    SET state = 'paying', payout_id = %(payout_id)s, state_changed_at = now()
    FROM pick
    WHERE a.id = pick.id AND a.state = 'converted'
    RETURNING a.usdt
), totals AS (
    SELECT count(*) AS n, sum(usdt) AS usdt FROM moved
)
UPDATE payouts_payout AS p
SET row_count = totals.n, usdt_amount = totals.usdt
FROM totals
WHERE p.id = %(payout_id)s AND totals.n > 0 AND totals.usdt >= %(minimum)s
RETURNING p.row_count, p.usdt_amount
"""

# Why each client is not being paid, written for all of them in one statement; only a
# changed reason is written, so `unpaid_since` says since when it holds.
_REASONS_SQL = """
UPDATE payouts_client AS c
SET unpaid_code = r.code, unpaid_reason = r.reason,
    unpaid_since = CASE WHEN r.code = '' THEN NULL ELSE now() END
FROM unnest(%(ids)s::bigint[], %(codes)s::text[], %(reasons)s::text[]) AS r(id, code, reason)
WHERE c.id = r.id AND (c.unpaid_code <> r.code OR c.unpaid_reason <> r.reason)
"""
# Clients that hold no converted USDT any more have nothing waiting.
_CLEAR_SQL = """
UPDATE payouts_client SET unpaid_code = '', unpaid_reason = '', unpaid_since = NULL
WHERE unpaid_code <> '' AND NOT (id = ANY(%(ids)s::bigint[]))
"""


class _NothingMoved(Exception):
    pass


class _Reasons:
    """The reason kept per client this run; `skip` also reports it in the sweep's answer."""

    def __init__(self, result: PayoutSweepResult) -> None:
        self.result = result
        self.kept: dict[int, tuple[str, str]] = {}

    def keep(self, c: _Candidate, code: str, text: str) -> None:
        self.kept[c.client_id] = (code, text[:300])

    def skip(self, c: _Candidate, code: str, text: str, reported: str) -> None:
        self.keep(c, code, text)
        self.result.skipped.append({"client": c.reference, "reason": reported})

    def store(self, candidates: list[_Candidate]) -> None:
        ids = [c.client_id for c in candidates]
        codes = [self.kept.get(i, ("", ""))[0] for i in ids]
        texts = [self.kept.get(i, ("", ""))[1] for i in ids]
        with connection.cursor() as cur:
            cur.execute(_REASONS_SQL, {"ids": ids, "codes": codes, "reasons": texts})
            cur.execute(_CLEAR_SQL, {"ids": ids})


def payout_sweep(
    *, actor: Actor, dry_run: bool = False, range_for: RangeFor | None = None
) -> PayoutSweepResult:
    """Reserve each eligible client's converted rows into payouts within ChangeNOW's range.

    `range_for(currency, network)` gives ChangeNOW's range of USDT for usdt->currency (None:
    unreadable now; the client is skipped and reported, never paid blindly).
    """
    check_move(Accumulation, "converted", "paying")
    result = PayoutSweepResult()
    with advisory_lock("sweep:payouts") as got:
        if not got:
            result.reason = "busy"
            return result
        return _sweep_locked(result=result, actor=actor, dry_run=dry_run, range_for=range_for)


def _candidates() -> list[_Candidate]:
    with connection.cursor() as cur:
        cur.execute(_CANDIDATES_SQL)
        return [
            _Candidate(
                row[0],
                row[1],
                row[2],
                Decimal(row[3]),
                row[4],
                row[5],
                int(row[6]),
                Decimal(row[7]),
                Decimal(row[8]),
            )  # fmt: skip
            for row in cur.fetchall()
        ]


def _open_payout_clients() -> set[int]:
    return set(
        Payout.objects.exclude(state__in=Payout.TERMINAL).values_list("client_id", flat=True)
    )


def _refused_destinations(client_ids: list[int]) -> dict[int, tuple[str, str]]:
    """Clients whose latest payout failed for a reason tied to their unchanged destination:
    {client id: (code, ChangeNOW's message)}."""
    latest = (
        Payout.objects.filter(client_id__in=client_ids)
        .order_by("client_id", "-created_at")
        .distinct("client_id")
        .select_related("client")
    )
    refused = {}
    for payout in latest:
        client = payout.client
        same = (payout.currency, payout.network, payout.address, payout.extra_id) == (
            client.payout_currency,
            client.payout_network,
            client.payout_address,
            client.payout_extra_id,
        )
        if payout.state == "failed" and payout.last_error_code in DESTINATION_REFUSALS and same:
            refused[client.pk] = (payout.last_error_code, payout.last_error)
    return refused


def _sweep_locked(
    *, result: PayoutSweepResult, actor: Actor, dry_run: bool, range_for: RangeFor | None
) -> PayoutSweepResult:
    runtime = runtime_settings_get()
    candidates = _candidates()
    reasons = _Reasons(result)
    if runtime.payouts_paused:
        result.reason = "paused"
        if not dry_run:
            for c in candidates:
                reasons.keep(c, "paused", "payouts are paused (kill switch in Run-time settings)")
            reasons.store(candidates)
        return result
    open_clients = _open_payout_clients()
    refused = _refused_destinations([c.client_id for c in candidates])
    pairs = currency_pair_states()
    ranges: dict[tuple[str, str], PairRange | None] = {}
    whole: list[_Candidate] = []  # paid whole, all in one statement after the loop
    made_for: dict[int, list[tuple[uuid.UUID, int, Decimal]]] = {}
    for c in candidates:
        if not c.active:
            reasons.skip(c, "inactive", "the client is inactive", "inactive")
            continue
        if c.usdt < c.threshold:
            reasons.keep(
                c,
                "below_threshold",
                f"{format_amount(c.usdt)} USDT is below its payout threshold of "
                f"{format_amount(c.threshold)}",
            )
            continue
        if c.client_id in open_clients:
            reasons.skip(
                c, "open_payout", "a payout is on its way; the rest follows it", "open_payout"
            )
            continue
        if c.client_id in refused:
            code, message = refused[c.client_id]
            reasons.skip(
                c,
                "destination_refused",
                f"ChangeNOW refused the destination ({code}): {message} - change it to pay",
                f"last_payout_refused:{code}",
            )
            continue
        if pairs and not pairs.get((c.currency, c.network), False):
            listed = (c.currency, c.network) in pairs
            reasons.skip(
                c,
                "currency_inactive",
                f"ChangeNOW {'no longer offers' if listed else 'does not list'} {c.currency} "
                f"on {c.network}: change the destination",
                "currency_inactive",
            )
            continue
        limits = _limits_for(c, runtime, ranges, range_for)
        if limits is None:
            reasons.skip(
                c,
                "range_unknown",
                f"ChangeNOW's range for usdt -> {c.currency}/{c.network} could not be read; "
                "the next sweep tries again",
                "minimum_unknown",
            )
            continue
        if c.usdt < limits.minimum:
            direct = payout_is_direct(currency=c.currency, network=c.network)
            reasons.skip(
                c,
                "below_minimum",
                f"{format_amount(c.usdt)} USDT is below the "
                + ("direct payout minimum" if direct else "exchange minimum")
                + f" of {format_amount(limits.minimum)}; it is paid once it grows",
                ("below_direct_minimum:" if direct else "below_exchange_minimum:")
                + format_amount(limits.minimum),
            )
            continue
        top = limits.maximum
        if top is not None and c.largest > top:
            reasons.skip(
                c,
                "above_maximum",
                f"a single payment of {format_amount(c.largest)} USDT is above ChangeNOW's "
                f"maximum of {format_amount(top)} for usdt -> {c.currency}: a person decides",
                f"above_exchange_maximum:{format_amount(top)}",
            )
            continue
        if dry_run:
            result.payouts.append(
                {"payout_id": None, "client": c.reference, "rows": c.rows, "usdt": str(c.usdt)}
            )
            continue
        if top is None or c.usdt <= top:
            whole.append(c)
            continue
        made = _reserve(c, limits, actor)
        if made:
            reasons.keep(
                c,
                "split",
                f"{format_amount(c.usdt)} USDT is above ChangeNOW's maximum of "
                f"{format_amount(top)}: split into {len(made)} payouts",
            )
        else:
            reasons.skip(
                c,
                "range_unusable",
                f"no part of {format_amount(c.usdt)} USDT fits ChangeNOW's range "
                f"{limits.describe('USDT')}: a person decides",
                "range_unusable",
            )
        made_for[c.client_id] = made
    if dry_run:
        return result
    made_for.update(_reserve_whole(whole, actor))
    for c in whole:
        if c.client_id not in made_for:  # its rows left 'converted' since the first read
            result.skipped.append({"client": c.reference, "reason": "rows_moved_meanwhile"})
    by_id = {c.client_id: c for c in candidates}
    for client_id in sorted(made_for):  # the answer lists clients in id order
        for payout_id, rows, usdt in made_for[client_id]:
            result.created += 1
            result.payouts.append(
                {
                    "payout_id": str(payout_id),
                    "client": by_id[client_id].reference,
                    "rows": rows,
                    "usdt": format_amount(usdt),
                }
            )
    reasons.store(candidates)
    return result


def _limits_for(
    c: _Candidate,
    runtime: Any,
    ranges: dict[tuple[str, str], PairRange | None],
    range_for: RangeFor | None,
) -> PairRange | None:
    if payout_is_direct(currency=c.currency, network=c.network):
        return PairRange(runtime.direct_payout_min_usdt, None)  # our own ERC-20 transfer
    key = (c.currency, c.network)
    if key not in ranges:
        ranges[key] = range_for(c.currency, c.network) if range_for else None
    return ranges[key]


def _new_payout(client: Client, payout_id: uuid.UUID, rows: int, usdt: Decimal) -> None:
    Payout.objects.create(
        id=payout_id,
        client=client,
        row_count=rows,
        usdt_amount=usdt,
        currency=client.payout_currency,
        network=client.payout_network,
        address=client.payout_address,
        extra_id=client.payout_extra_id,
    )


def _created(
    c: _Candidate, client: Client, payout_id: uuid.UUID, rows: int, usdt: Decimal, actor: Actor,
    note: str = "",
) -> None:  # fmt: skip
    audit_record(
        object_type="payout",
        object_id=payout_id,
        kind="created",
        actor=actor,
        to_state="reserved",
        reason="payout sweep" + note,
        data={
            "client": c.reference,
            "rows": rows,
            "usdt": usdt,
            "destination": f"{client.payout_currency}/{client.payout_network} "
            f"{client.payout_address}",
            "accumulations": "converted -> paying",
        },
    )
    from payouts.engine import enqueue_advance

    enqueue_advance(kind="payout", order_id=payout_id)


def _reserve_whole(
    whole: list[_Candidate], actor: Actor
) -> dict[int, list[tuple[uuid.UUID, int, Decimal]]]:
    """All the converted rows of each client into one payout per client, in one transaction
    and a fixed number of statements whatever the number of clients."""
    if not whole:
        return {}
    ids = [c.client_id for c in whole]
    payout_ids = [uuid.uuid4() for _ in whole]
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(_LOCK_CLIENTS_SQL, {"ids": ids})
        # A hash join is right at every size; stale statistics would pick a loop over the
        # client list once per row (payouts.planner).
        with without_nested_loops(cur):
            cur.execute(
                _RESERVE_WHOLE_SQL,
                {
                    "client_ids": ids,
                    "payout_ids": payout_ids,
                    "now": timezone.now(),
                    "actor": actor.name,
                    "user_id": actor.user.pk if actor.user is not None and actor.user.pk else None,
                },
            )
            made = {
                int(client_id): [(payout_id, int(rows), Decimal(usdt))]
                for payout_id, client_id, rows, usdt in cur.fetchall()
            }
        _enqueue_followups([m[0][0] for m in made.values()])
    return made


def _enqueue_followups(payout_ids: list[uuid.UUID]) -> None:
    from payouts.engine import enqueue_advance, enqueue_task

    for payout_id in payout_ids[:FOLLOWUPS_PER_SWEEP]:
        enqueue_advance(kind="payout", order_id=payout_id)
    if len(payout_ids) > FOLLOWUPS_PER_SWEEP:
        enqueue_task("payouts.tasks.advance_open_orders", group="advance")


def _reserve(
    c: _Candidate, limits: PairRange, actor: Actor
) -> list[tuple[uuid.UUID, int, Decimal]]:
    """The client's rows split over payouts within [min, max], oldest first, in one
    transaction; each payout knows the total of the split (for dual control)."""
    assert limits.maximum is not None
    made: list[tuple[uuid.UUID, int, Decimal]] = []
    with transaction.atomic():
        client = Client.objects.select_for_update().get(pk=c.client_id)
        with connection.cursor() as cur:
            for _ in range(MAX_SPLIT_PAYOUTS):
                payout_id = uuid.uuid4()
                try:
                    with transaction.atomic():
                        _new_payout(client, payout_id, 1, limits.maximum)  # totals set below
                        cur.execute(
                            _SPLIT_SQL,
                            {
                                "payout_id": payout_id,
                                "client_id": c.client_id,
                                "maximum": limits.maximum,
                                "minimum": limits.minimum,
                            },
                        )
                        moved = cur.fetchone()
                        if moved is None:
                            raise _NothingMoved
                except _NothingMoved:
                    break
                made.append((payout_id, int(moved[0]), Decimal(moved[1])))
        total = sum((usdt for _id, _rows, usdt in made), Decimal(0))
        Payout.objects.filter(pk__in=[m[0] for m in made]).update(split_total_usdt=total)
        for index, (payout_id, rows, usdt) in enumerate(made, start=1):
            _created(
                c, client, payout_id, rows, usdt, actor,
                note=f", {index} of {len(made)} within ChangeNOW's maximum",
            )  # fmt: skip
    return made
