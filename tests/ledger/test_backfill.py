"""The backfill migration books rows that existed before the ledger exactly as the live
postings would have: same accounts, same balances."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from backoffice.reconcile import reconcile_breaches
from ledger.models import LedgerTransaction
from tests.factories import ClientFactory
from tests.ledger import test_model as m

pytestmark = pytest.mark.django_db(transaction=True)


def migrate_ledger(target: str | None) -> None:
    executor = MigrationExecutor(connection)
    nodes = [("ledger", target)] if target else executor.loader.graph.leaf_nodes("ledger")
    executor.migrate(nodes)


def test_the_backfill_books_what_the_live_postings_booked() -> None:
    m.CLIENTS[:] = [ClientFactory(reference=f"bf-{i}", fee_percent=m.FEES[i]) for i in range(3)]
    model = m.Model()
    m.op_intake(model, 0, Decimal("0.4"))
    m.op_intake(model, 1, Decimal("0.25"))
    m.op_convert(model, Decimal("0.97"), 21_000 * 10**9)
    m.op_payout(model, 0, 50_000 * 10**9)
    m.op_intake(model, 2, Decimal("0.1"))
    m.op_write_off(model)
    m.op_intake(model, 1, Decimal("0.3"))
    m.op_refund(model, Decimal("0.9"), 21_000 * 10**9)
    m.op_intake(model, 2, Decimal("0.05"))  # still pending
    live = m.actual()
    assert live == model.expected()
    kinds = set(LedgerTransaction.objects.values_list("kind", flat=True))
    assert kinds >= {"intake", "transfer", "batch_completed", "payout_completed", "write_off"}

    # The same rows in a database that has no ledger yet.
    migrate_ledger("0003_intake_posting")
    with connection.cursor() as cur:
        cur.execute("TRUNCATE ledger_leg, ledger_ledgertransaction")
    migrate_ledger(None)  # 0004 backfills

    assert not LedgerTransaction.objects.exclude(actor="system:backfill").exists()
    assert m.actual() == live
    assert reconcile_breaches() == []
