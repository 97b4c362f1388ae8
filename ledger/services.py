"""Posting to the ledger and reading its balances (DESIGN.md section 12.2).

Two ways to post, both inside the caller's database transaction so a posting commits or
rolls back with the state change that caused it:
- `ledger_post`: a handful of legs computed in Python (a transfer, a payout, a refund);
- `ledger_post_select`: legs produced by one SQL SELECT (a batch's clients), posted with one
  INSERT ... SELECT whatever the number of clients.
Accounts are created on first use. The database refuses unbalanced postings at commit; the
checks here only give the caller an earlier and clearer message.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from django.db import connection, transaction

from ledger.models import Account, LedgerTransaction

Line = tuple[str, str, Decimal]  # (account name, asset, signed amount: debit > 0)

# Accounts whose balance grows with credits: shown negated so that every balance reads
# in its natural sign (what we hold, what we owe, what we earned).
CREDIT_NORMAL = ("liability", "income", "equity")


class LedgerError(Exception):
    """A posting that cannot be booked as asked (it does not balance, or names no cause)."""


def client_account(reference: str) -> str:
    return f"clients:{reference}"


def in_transit_account(order_id: object) -> str:
    return f"in_transit:{order_id}"


def _combined(lines: Iterable[Line]) -> list[Line]:
    totals: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for name, asset, amount in lines:
        totals[(name, asset)] += Decimal(amount)
    return [(name, asset, amount) for (name, asset), amount in totals.items() if amount != 0]


def _check_balanced(kind: str, lines: Sequence[Line]) -> None:
    per_asset: dict[str, Decimal] = defaultdict(Decimal)
    for _name, asset, amount in lines:
        per_asset[asset] += amount
    off = {asset: total for asset, total in per_asset.items() if total != 0}
    if off:
        raise LedgerError(f"{kind} posting does not balance: {off}")
    if len(lines) < 2:
        raise LedgerError(f"{kind} posting needs two or more legs, got {len(lines)}")


_ACCOUNTS_SQL = """
INSERT INTO ledger_account (name, asset, kind)
SELECT n, a, ledger_account_kind(n) FROM unnest(%s::text[], %s::text[]) AS u(n, a)
ON CONFLICT (name, asset) DO NOTHING
"""

_LEGS_SQL = """
INSERT INTO ledger_leg (transaction_id, account_id, amount)
SELECT %s, acct.id, u.amount
FROM unnest(%s::text[], %s::text[], %s::numeric[]) AS u(name, asset, amount)
JOIN ledger_account acct ON acct.name = u.name AND acct.asset = u.asset
"""


def ledger_post(
    *,
    kind: str,
    lines: Iterable[Line],
    actor: str,
    memo: str = "",
    tx_hash: str = "",
    links: Mapping[str, Any] | None = None,
) -> LedgerTransaction:
    """Book one balanced transaction. `links` names its cause (accumulation_id, batch_id,
    payout_id, transfer_id); booking the same cause twice is refused by the database."""
    legs = _combined(lines)
    _check_balanced(kind, legs)
    names = [line[0] for line in legs]
    assets = [line[1] for line in legs]
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(_ACCOUNTS_SQL, [names, assets])
        header = LedgerTransaction.objects.create(
            kind=kind, memo=memo[:2000], actor=actor, tx_hash=tx_hash, **(links or {})
        )
        cur.execute(_LEGS_SQL, [header.pk, names, assets, [str(line[2]) for line in legs]])
        if cur.rowcount != len(legs):
            raise LedgerError(f"{kind} posting: {cur.rowcount} of {len(legs)} legs written")
    return header


def ledger_post_select(
    *,
    kind: str,
    lines_sql: str,
    params: Mapping[str, Any],
    actor: str,
    memo: str = "",
    links: Mapping[str, Any] | None = None,
) -> int:
    """Book one transaction whose legs come from `lines_sql` (columns: name, asset, amount;
    named %(...)s parameters), in two statements whatever the number of legs. Returns the
    number of legs written."""
    columns = sorted((links or {}).keys())
    if any(c not in ("accumulation_id", "batch_id", "payout_id", "transfer_id") for c in columns):
        raise LedgerError(f"unknown link in {columns}")
    values = {f"link_{c}": (links or {})[c] for c in columns}
    link_cols = "".join(f", {c}" for c in columns)
    link_vals = "".join(f", %(link_{c})s" for c in columns)
    sql = f"""
    WITH lines AS MATERIALIZED (
        SELECT name, asset, sum(amount) AS amount FROM ({lines_sql}) raw
        GROUP BY name, asset HAVING sum(amount) <> 0
    ), header AS (
        INSERT INTO ledger_ledgertransaction (kind, memo, actor, tx_hash, created_at{link_cols})
        VALUES (%(ledger_kind)s, %(ledger_memo)s, %(ledger_actor)s, '', now(){link_vals})
        RETURNING id
    )
    INSERT INTO ledger_leg (transaction_id, account_id, amount)
    SELECT header.id, acct.id, lines.amount
    FROM lines JOIN ledger_account acct ON acct.name = lines.name AND acct.asset = lines.asset
    CROSS JOIN header
    """  # noqa: S608 - lines_sql and the link columns are constants of this code base
    accounts = f"""
    INSERT INTO ledger_account (name, asset, kind)
    SELECT DISTINCT name, asset, ledger_account_kind(name) FROM ({lines_sql}) raw
    ON CONFLICT (name, asset) DO NOTHING
    """  # noqa: S608
    args = {
        **params,
        **values,
        "ledger_kind": kind,
        "ledger_memo": memo[:2000],
        "ledger_actor": actor,
    }
    with connection.cursor() as cur:
        cur.execute(accounts, args)
        cur.execute(sql, args)
        return cur.rowcount


def balances_get(*, names: Sequence[str] | None = None) -> dict[str, dict[str, Decimal]]:
    """Every account's balance per asset, in its natural sign (see CREDIT_NORMAL)."""
    where, params = ("WHERE a.name = ANY(%s)", [list(names)]) if names is not None else ("", [])
    sql = f"""
        SELECT a.name, a.asset, a.kind, coalesce(sum(l.amount), 0)
        FROM ledger_account a LEFT JOIN ledger_leg l ON l.account_id = a.id
        {where} GROUP BY a.id ORDER BY a.name, a.asset
    """  # noqa: S608 - the WHERE is one of two constants
    out: dict[str, dict[str, Decimal]] = {}
    with connection.cursor() as cur:
        cur.execute(sql, params)
        for name, asset, kind, total in cur.fetchall():
            value = -Decimal(total) if kind in CREDIT_NORMAL else Decimal(total)
            out.setdefault(name, {})[asset] = value + 0  # -0 reads as 0
    return out


def account_balance(name: str, asset: str) -> Decimal:
    return balances_get(names=[name]).get(name, {}).get(asset, Decimal(0))


def natural_sign(kind: str) -> int:
    return -1 if kind in CREDIT_NORMAL else 1


__all__ = [
    "Account",
    "LedgerError",
    "LedgerTransaction",
    "account_balance",
    "balances_get",
    "client_account",
    "in_transit_account",
    "ledger_post",
    "ledger_post_select",
]
