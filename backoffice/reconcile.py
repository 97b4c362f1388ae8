"""`reconcile`: the proof that every unit of money is accounted for (DESIGN.md 6 and 12.2).

Two halves, each a list of named breaches (an empty list is the proof):
- Database invariants, each one set-based query returning the offending objects: states
  agree with links, orders match their rows and sends, the ledger balances, every movement
  is booked, terminal orders hold nothing in transit, and each client's ledger balance is
  the sum of its accumulations.
- Providers, one call per object: the host wallet's chain balances against the ledger,
  every hash we signed and gave up on (dead, abandoned) stays unmined, closed orders'
  exchanges received nothing we did not send, open and recent orders agree with ChangeNOW.

A provider read that fails is retried (`RETRY_DELAYS`) and then reported as
"provider unreadable": never as a money breach, never as a pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from integrations.assets import more_than, same_amount
from integrations.errors import ProviderError, read_with_retries
from payouts.planner import without_nested_loops

T = TypeVar("T")
RETRY_DELAYS: tuple[float, ...] = (0.25, 0.5, 1.0)
UNREADABLE = "provider unreadable"


@dataclass(frozen=True)
class Breach:
    invariant: str
    object: str
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"invariant": self.invariant, "object": self.object, "detail": self.detail}


class Unreadable(Exception):
    """A provider could not be read after every retry."""


def provider_read(call: Callable[[], T]) -> T:
    """`call()`, retried after each delay of RETRY_DELAYS; Unreadable if it still fails."""
    try:
        return read_with_retries(call, delays=RETRY_DELAYS)
    except ProviderError as exc:
        raise Unreadable(str(exc)) from exc


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
        "totals: kept per state equal the rows",
        """
        WITH kept AS (
            SELECT state, sum(row_count) AS n, sum(eth) AS eth, sum(usd) AS usd,
                   sum(usdt) AS usdt
            FROM payouts_accumulationtotal GROUP BY state
        ), held AS (
            SELECT state, count(*) AS n, sum(eth) AS eth, sum(usd) AS usd,
                   coalesce(sum(usdt), 0) AS usdt
            FROM payouts_accumulation GROUP BY state
        )
        SELECT 'accumulation_totals:' || coalesce(k.state, h.state),
               'kept ' || coalesce(k.n, 0) || ' rows, ' || coalesce(k.eth, 0) || ' ETH, '
               || coalesce(k.usd, 0) || ' USD, ' || coalesce(k.usdt, 0)
               || ' USDT; the accumulations hold ' || coalesce(h.n, 0) || ' rows, '
               || coalesce(h.eth, 0) || ' ETH, ' || coalesce(h.usd, 0) || ' USD, '
               || coalesce(h.usdt, 0) || ' USDT'
        FROM kept k FULL JOIN held h ON h.state = k.state
        WHERE coalesce(k.n, 0) <> coalesce(h.n, 0) OR coalesce(k.eth, 0) <> coalesce(h.eth, 0)
           OR coalesce(k.usd, 0) <> coalesce(h.usd, 0)
           OR coalesce(k.usdt, 0) <> coalesce(h.usdt, 0)
        """,
    ),
    (
        "ledger: every transaction balances",
        """
        SELECT 'ledger_transaction:' || l.transaction_id,
               a.asset || ' legs sum to ' || sum(l.amount) || ', not zero'
        FROM ledger_leg l JOIN ledger_account a ON a.id = l.account_id
        GROUP BY l.transaction_id, a.asset HAVING sum(l.amount) <> 0
        UNION ALL
        SELECT 'ledger_transaction:' || t.id, t.kind || ' has ' || count(l.id) || ' leg(s)'
        FROM ledger_ledgertransaction t LEFT JOIN ledger_leg l ON l.transaction_id = t.id
        GROUP BY t.id HAVING count(l.id) < 2
        UNION ALL
        SELECT 'ledger_transaction:' || l.transaction_id,
               'leg ' || l.id || ' names account ' || l.account_id || ', which does not exist'
        FROM ledger_leg l WHERE NOT EXISTS (
            SELECT 1 FROM ledger_account a WHERE a.id = l.account_id)
        """,
    ),
    (
        "ledger: every movement is booked",
        """
        SELECT 'accumulation:' || a.id, 'credited but no intake posting'
        FROM payouts_accumulation a
        WHERE NOT EXISTS (SELECT 1 FROM ledger_ledgertransaction t
                          WHERE t.kind = 'intake' AND t.accumulation_id = a.id)
        UNION ALL
        SELECT 'batch:' || b.id, 'completed but not booked' FROM batches_conversionbatch b
        WHERE b.state = 'completed' AND NOT EXISTS (
            SELECT 1 FROM ledger_ledgertransaction t
            WHERE t.kind = 'batch_completed' AND t.batch_id = b.id)
        UNION ALL
        SELECT 'payout:' || p.id, 'completed but not booked' FROM payouts_payout p
        WHERE p.state = 'completed' AND NOT EXISTS (
            SELECT 1 FROM ledger_ledgertransaction t
            WHERE t.kind = 'payout_completed' AND t.payout_id = p.id)
        UNION ALL
        SELECT 'transfer:' || x.id, x.state || ' and final but not booked'
        FROM payouts_transfer x
        WHERE x.final_at IS NOT NULL AND x.state IN ('mined', 'reverted', 'cancelled')
          AND (x.state = 'mined' OR coalesce(x.gas_fee_wei, 0) > 0)
          AND NOT EXISTS (SELECT 1 FROM ledger_ledgertransaction t
                          WHERE t.kind = 'transfer' AND t.transfer_id = x.id)
        """,
    ),
    (
        "ledger: terminal orders hold nothing in transit",
        """
        SELECT a.name, a.asset || ' ' || sum(l.amount) || ' still in transit for a '
               || o.state || ' ' || o.kind
        FROM (
            SELECT id AS batch_id, NULL::uuid AS payout_id, id::text AS id, state,
                   'batch' AS kind
            FROM batches_conversionbatch WHERE state IN ('completed', 'failed', 'force_closed')
            UNION ALL
            SELECT NULL, id, id::text, state, 'payout' FROM payouts_payout
            WHERE state IN ('completed', 'failed', 'force_closed')
        ) o
        JOIN ledger_account a ON a.name = 'in_transit:' || o.id
        JOIN ledger_leg l ON l.account_id = a.id
        WHERE NOT EXISTS (
            SELECT 1 FROM payouts_transfer t
            WHERE (t.batch_id = o.batch_id OR t.payout_id = o.payout_id)
              AND (t.state IN ('signed', 'broadcast')
                   OR (t.state IN ('mined', 'reverted', 'cancelled') AND t.final_at IS NULL)))
        GROUP BY a.name, a.asset, o.state, o.kind HAVING sum(l.amount) <> 0
        """,
    ),
    (
        "ledger: client balance equals accumulations",
        """
        WITH booked AS (
            SELECT substr(a.name, 9) AS reference, a.asset, -sum(l.amount) AS owed
            FROM ledger_account a JOIN ledger_leg l ON l.account_id = a.id
            WHERE a.name LIKE 'clients:%%' GROUP BY a.name, a.asset
        ), held AS (
            SELECT c.reference, x.asset, sum(x.amount) AS owed
            FROM payouts_accumulation r JOIN payouts_client c ON c.id = r.client_id
            CROSS JOIN LATERAL (VALUES
                ('eth', CASE WHEN r.state IN ('pending', 'converting') THEN r.eth END),
                ('usdt', CASE WHEN r.state IN ('converted', 'paying') THEN r.usdt END)
            ) AS x(asset, amount)
            WHERE r.state IN ('pending', 'converting', 'converted', 'paying')
            GROUP BY c.reference, x.asset
        )
        SELECT 'clients:' || coalesce(b.reference, h.reference),
               coalesce(b.asset, h.asset) || ': ledger owes ' || coalesce(b.owed, 0)
               || ', accumulations hold ' || coalesce(h.owed, 0)
        FROM booked b FULL JOIN held h ON h.reference = b.reference AND h.asset = b.asset
        WHERE coalesce(b.owed, 0) <> coalesce(h.owed, 0)
        """,
    ),
)


def reconcile_breaches(*, limit_per_check: int = 100) -> list[Breach]:
    breaches: list[Breach] = []
    # Every check reads whole tables and expects no rows: under its LIMIT the planner would
    # bet on early matches and loop row by row (payouts.planner).
    with transaction.atomic(), connection.cursor() as cur, without_nested_loops(cur):
        for invariant, sql in CHECKS:
            cur.execute(f"{sql} LIMIT %s", [limit_per_check])  # noqa: S608 - constant SQL
            breaches.extend(Breach(invariant, str(obj), str(detail)) for obj, detail in cur)
    return breaches


RECENT = timedelta(days=1)
UNFUNDED_STATUSES = frozenset({"new", "waiting", "expired"})
PARTNER_PAGE = 100
PARTNER_MAX_PAGES = 50


def provider_breaches(*, now: Any = None) -> list[Breach]:
    from payouts import engine

    cn, wallet = ExchangeReads(engine.changenow()), engine.wallet()
    since = (now or timezone.now()) - RECENT
    inflows, inflow_breaches = unbooked_inflows(cn)
    return [
        *host_wallet_breaches(wallet, inflows),
        *inflow_breaches,
        *given_up_hash_breaches(wallet),
        *recent_transfer_breaches(wallet, since),
        *closed_order_breaches(cn),
        *open_order_breaches(cn, since),
        *partner_list_breaches(cn, since),
    ]


class ExchangeReads:
    """ChangeNOW, read once per exchange per reconcile run (several checks look at one)."""

    def __init__(self, cn: Any) -> None:
        self.cn = cn
        self.seen: dict[str, Any] = {}

    def get_exchange(self, exchange_id: str) -> Any:
        if exchange_id not in self.seen:
            self.seen[exchange_id] = provider_read(lambda: self.cn.get_exchange(exchange_id))
        return self.seen[exchange_id]

    def list_exchanges(self, **kwargs: Any) -> Any:
        return self.cn.list_exchanges(**kwargs)


NOT_COMPLETED = ("reserved", "exchange_created", "funds_sent", "converting", "needs_attention")
CLOSED = ("failed", "force_closed")


def unbooked_inflows(cn: ExchangeReads) -> tuple[dict[str, Decimal], list[Breach]]:
    """What ChangeNOW paid into the host wallet for orders the books have not settled: the
    USDT of an exchange that finished while its order waits for a person, a refund not yet
    proved. For an open order the books catch up when it completes; for a closed one a
    person must book it (the breach names it)."""
    from ledger.models import LedgerTransaction
    from payouts import engine
    from payouts.models import ExchangeAttempt

    host = (settings.HOST_WALLET_ADDRESS or "").lower()
    inflows = {"eth": Decimal(0), "usdt": Decimal(0)}
    breaches: list[Breach] = []
    if not host:
        return inflows, breaches  # the host wallet check reports it unreadable
    for kind in engine.KINDS.values():
        link = kind.link_field
        orders = {
            o.pk: o
            for o in kind.model.objects.filter(state__in=[*NOT_COMPLETED, *CLOSED]).only(
                "pk", "state", "refund_tx_hash"
            )
        }
        attempts = (
            ExchangeAttempt.objects.filter(**{f"{link}_id__in": list(orders)})
            .exclude(exchange_id="")
            .values_list(f"{link}_id", "exchange_id")
            .distinct()
        )
        for order_id, exchange_id in attempts:
            order = orders[order_id]
            try:
                exchange = cn.get_exchange(exchange_id)
            except Unreadable as exc:
                breaches.append(Breach(UNREADABLE, f"changenow:{exchange_id}", str(exc)))
                continue
            for asset, amount, tx_hash, what in _paid_to_host(exchange, host):
                if tx_hash and (
                    tx_hash == order.refund_tx_hash
                    or LedgerTransaction.objects.filter(tx_hash=tx_hash.lower()).exists()
                ):
                    continue  # proved and booked
                inflows[asset] += amount
                if order.state in CLOSED:
                    breaches.append(
                        Breach(
                            f"changenow: a closed order's {what} is unbooked",
                            f"{kind.name}:{order_id}",
                            f"exchange {exchange_id} paid {amount} {asset.upper()} to the "
                            f"host wallet ({tx_hash or 'no hash'}) for a {order.state} order: "
                            "book it (owner_transfer) once a person decided whose it is",
                        )
                    )
    return inflows, breaches


def _paid_to_host(exchange: Any, host: str) -> list[tuple[str, Decimal, str, str]]:
    out = []
    to = (exchange.to_currency or "").lower()
    if (
        exchange.status in ("sending", "finished")
        and exchange.amount_to
        and (exchange.payout_address or "").lower() == host
        and (exchange.to_network or "eth") == "eth"
        and to in ("eth", "usdt")
    ):
        out.append((to, exchange.amount_to, exchange.payout_hash or "", "payout"))
    source = (exchange.from_currency or "").lower()
    if exchange.status == "refunded" and exchange.refund_amount and source in ("eth", "usdt"):
        out.append((source, exchange.refund_amount, exchange.refund_hash or "", "refund"))
    return out


def host_wallet_breaches(wallet: Any, inflows: dict[str, Decimal] | None = None) -> list[Breach]:
    """The host wallet's chain balances equal its ledger balance less what left on chain and
    is not booked yet (mined, not final: amounts and gas), plus what ChangeNOW paid in for
    orders not settled yet (`unbooked_inflows`)."""
    from ledger.services import account_balance
    from payouts.custody import unbooked_outflows

    try:
        chain = {
            "eth": provider_read(wallet.get_balance),
            "usdt": provider_read(wallet.get_token_balance),
        }
    except (Unreadable, ValueError) as exc:  # ValueError: no host wallet address configured
        return [Breach(UNREADABLE, "chain:host_wallet", str(exc))]
    unbooked = unbooked_outflows()
    try:
        for asset, amount in _mined_not_recorded(wallet).items():
            unbooked[asset] += amount
    except Unreadable as exc:
        return [Breach(UNREADABLE, "chain:host_wallet", str(exc))]
    breaches = []
    for asset, on_chain in chain.items():
        booked = account_balance("host_wallet", asset)
        arriving = (inflows or {}).get(asset, Decimal(0))
        expected = booked - unbooked[asset] + arriving
        if on_chain != expected:
            breaches.append(
                Breach(
                    "chain: host wallet equals the ledger",
                    f"host_wallet:{asset}",
                    f"chain holds {on_chain} {asset.upper()}, ledger {booked} less "
                    f"{unbooked[asset]} sent and not yet final plus {arriving} paid in for "
                    f"unsettled orders = {expected}: {on_chain - expected:+} unexplained",
                )
            )
    return breaches


def _mined_not_recorded(wallet: Any) -> dict[str, Decimal]:
    """What transfers we still record as pending (signed, broadcast) already paid on chain:
    the chain is ahead of our records until the engine's next check."""
    from payouts.models import Transfer, TransferTx
    from payouts.postings import WEI
    from payouts.sending import receipt_is_cancel

    out = {"eth": Decimal(0), "usdt": Decimal(0)}
    pending = {t.pk: t for t in Transfer.objects.filter(state__in=Transfer.PENDING)}
    txs = TransferTx.objects.filter(transfer_id__in=pending).values_list(
        "transfer_id", "tx_hash", "kind"
    )
    for transfer_id, tx_hash, kind in txs:
        receipt = provider_read(lambda h=tx_hash: wallet.get_receipt(h))
        if receipt is None:
            continue
        transfer = pending[transfer_id]
        if receipt.succeeded and not receipt_is_cancel(transfer, receipt, kind=kind):
            out[transfer.asset.lower()] += transfer.amount
        out["eth"] += Decimal(receipt.fee_wei or 0) * WEI
    return out


def given_up_hash_breaches(wallet: Any) -> list[Breach]:
    """Every hash signed for a transfer we believe never paid (dead, abandoned, closed):
    a receipt for any of them is money that left without our books knowing."""
    from payouts.models import Transfer, TransferTx

    given_up = ["dead", "abandoned", "closed"]
    hashes = set(
        TransferTx.objects.filter(transfer__state__in=given_up).values_list(
            "transfer_id", "tx_hash"
        )
    ) | set(
        Transfer.objects.filter(state__in=given_up).exclude(tx_hash="").values_list("id", "tx_hash")
    )
    breaches = []
    for transfer_id, tx_hash in sorted(hashes):
        try:
            receipt = provider_read(lambda h=tx_hash: wallet.get_receipt(h))
        except Unreadable as exc:
            breaches.append(Breach(UNREADABLE, f"chain:{tx_hash}", str(exc)))
            continue
        if receipt is not None:
            breaches.append(
                Breach(
                    "chain: a transfer we gave up on mined",
                    f"transfer:{transfer_id}",
                    f"{tx_hash} mined in block {receipt.block_number} "
                    f"({'succeeded' if receipt.succeeded else 'reverted'}) though the "
                    "transfer is recorded as never paid",
                )
            )
    return breaches


def recent_transfer_breaches(wallet: Any, since: Any) -> list[Breach]:
    from payouts.models import Transfer
    from payouts.sending import receipt_is_cancel

    transfers = Transfer.objects.filter(
        state__in=["broadcast", "mined"], created_at__gte=since
    ).exclude(tx_hash="")
    breaches: list[Breach] = []
    for transfer in transfers:
        # The hash that mined, which is not always the newest one signed.
        tx_hash = transfer.mined_hash or transfer.tx_hash
        name = f"transfer:{tx_hash}"
        try:
            receipt = provider_read(lambda h=tx_hash: wallet.get_receipt(h))
        except Unreadable as exc:
            breaches.append(Breach(UNREADABLE, name, str(exc)))
            continue
        if receipt is None:
            continue  # not mined yet: the watchdog follows stuck transfers
        if transfer.state == "broadcast" and receipt_is_cancel(transfer, receipt):
            continue  # a cancel mined before the engine's next check records it as cancelled
        if not receipt.succeeded:
            breaches.append(Breach("chain: transfer succeeded", name, "reverted on chain"))
        expected_to = (
            transfer.to_address if transfer.asset == "eth" else settings.USDT_CONTRACT_ADDRESS
        )
        if receipt.to and receipt.to.lower() != expected_to.lower():
            breaches.append(
                Breach(
                    "chain: transfer destination",
                    name,
                    f"mined to {receipt.to}, expected {expected_to}",
                )
            )
    return breaches


def closed_order_breaches(cn: Any) -> list[Breach]:
    """Failed and force-closed orders against ChangeNOW: an exchange of theirs that received
    a deposit while none of our transfers for the order paid is a send we cannot explain."""
    from payouts import engine
    from payouts.models import ExchangeAttempt, Transfer

    breaches: list[Breach] = []
    for kind in engine.KINDS.values():
        link = kind.link_field
        closed = kind.model.objects.filter(state__in=["failed", "force_closed"])
        paid = set(
            Transfer.objects.filter(
                **{f"{link}__in": closed.values("pk")}, state="mined"
            ).values_list(f"{link}_id", flat=True)
        )
        attempts = (
            ExchangeAttempt.objects.filter(**{f"{link}__in": closed.values("pk")})
            .exclude(exchange_id="")
            .values_list(f"{link}_id", "exchange_id")
            .distinct()
        )
        for order_id, exchange_id in attempts:
            name = f"{kind.name}:{order_id}"
            try:
                exchange = cn.get_exchange(exchange_id)
            except Unreadable as exc:
                breaches.append(Breach(UNREADABLE, f"changenow:{exchange_id}", str(exc)))
                continue
            received = exchange.amount_from or Decimal(0)
            if received > 0 and order_id not in paid:
                breaches.append(
                    Breach(
                        "changenow: closed orders received nothing unexpected",
                        name,
                        f"exchange {exchange_id} received {received} "
                        f"({exchange.status}) but no transfer of this "
                        f"{closed.model._meta.verbose_name} paid it",
                    )
                )
    return breaches


def open_order_breaches(cn: Any, since: Any) -> list[Breach]:
    """Open and recently completed orders agree with ChangeNOW (by id)."""
    from payouts import engine

    breaches: list[Breach] = []
    for kind in engine.KINDS.values():
        orders = (
            kind.model.objects.filter(
                Q(state__in=engine.OPEN_STATES)
                | Q(state__in=["needs_attention", "completed"], state_changed_at__gte=since)
            )
            .exclude(exchange_id="")
            .distinct()
        )
        for order in orders:
            name = f"{kind.name}:{order.pk}"
            try:
                exchange = cn.get_exchange(order.exchange_id)
            except Unreadable as exc:
                breaches.append(Breach(UNREADABLE, name, str(exc)))
                continue
            breaches += _exchange_agrees(kind, order, exchange, name)
    return breaches


def _exchange_agrees(kind: Any, order: Any, exchange: Any, name: str) -> list[Breach]:
    spec = kind.exchange_spec(order)
    out: list[Breach] = []
    if (
        spec is not None
        and exchange.expected_amount_from is not None
        and not same_amount(spec.amount_from, exchange.expected_amount_from)
    ):
        out.append(
            Breach(
                "changenow: exchange amount",
                name,
                f"ChangeNOW expects {exchange.expected_amount_from}, we hold {spec.amount_from}",
            )
        )
    if exchange.payin_address and exchange.payin_address != order.payin_address:
        out.append(
            Breach(
                "changenow: payin address",
                name,
                f"ChangeNOW {exchange.payin_address} <> stored {order.payin_address}",
            )
        )
    if order.state == "completed" and exchange.status != "finished":
        out.append(
            Breach(
                "changenow: completed orders are finished",
                name,
                f"completed here, {exchange.status} at ChangeNOW",
            )
        )
    if (
        exchange.amount_from is not None
        and spec is not None
        and more_than(exchange.amount_from, spec.amount_from)
    ):
        out.append(
            Breach(
                "changenow: one deposit per order",
                name,
                f"ChangeNOW received {exchange.amount_from}, we sent {spec.amount_from}",
            )
        )
    return out


def partner_list_breaches(cn: Any, since: Any) -> list[Breach]:
    """ChangeNOW's list of our partner exchanges of the last day against our attempts."""
    from payouts.models import ExchangeAttempt

    known = set(
        ExchangeAttempt.objects.exclude(exchange_id="").values_list("exchange_id", flat=True)
    )
    try:
        listed = _partner_exchanges(cn, since)
    except Unreadable as exc:
        return [Breach(UNREADABLE, "changenow:partner exchange list", str(exc))]
    breaches: list[Breach] = []
    for item in listed:
        ids = {item.request_id, item.exchange_id} - {None}
        # An exchange that never received funds is harmless by design (a create whose answer
        # was lost is retried); one that moved past waiting is money we cannot account for.
        if not ids & known and item.status not in UNFUNDED_STATUSES:
            breaches.append(
                Breach(
                    "changenow: every exchange is ours",
                    f"exchange:{item.id}",
                    f"ChangeNOW lists exchange {item.id} ({item.status}) that no order owns",
                )
            )
        raw = item.raw or {}
        for extra in ("repeatedExchangesInfo", "relatedExchangesInfo"):
            if raw.get(extra):
                breaches.append(
                    Breach(
                        "changenow: one deposit per exchange",
                        f"exchange:{item.id}",
                        f"{extra}: {json.dumps(raw[extra], default=str)[:300]}",
                    )
                )
    return breaches


def _partner_exchanges(cn: Any, since: Any) -> list[Any]:
    rows: list[Any] = []
    for page in range(PARTNER_MAX_PAGES):
        batch = provider_read(
            lambda p=page: cn.list_exchanges(
                date_from=since, limit=PARTNER_PAGE, offset=p * PARTNER_PAGE
            )
        )
        rows.extend(batch.exchanges)
        if len(batch.exchanges) < PARTNER_PAGE:
            break
    return rows


def reconcile_run(*, providers: bool = True, alert: bool = False) -> dict[str, Any]:
    from backoffice.operations import alert_raise, alerts_resolve_cleared

    breaches = reconcile_breaches()
    if providers:
        breaches += provider_breaches()
    if alert:
        for breach in breaches:
            alert_raise(
                key=f"reconcile:{breach.invariant}:{breach.object}"[:200],
                kind="reconcile_breach",
                message=f"[{breach.invariant}] {breach.object}: {breach.detail}",
            )
        alerts_resolve_cleared(
            prefix="reconcile:",
            still_open={f"reconcile:{b.invariant}:{b.object}"[:200] for b in breaches},
            actor="system:reconcile",
        )
    return {"ok": not breaches, "breaches": [b.as_json() for b in breaches]}
