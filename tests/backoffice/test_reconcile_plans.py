"""reconcile's database checks never run as row-by-row loops.

Each check reads whole tables under a LIMIT and expects no rows; the planner, betting on
early matches, chose nested loops and took over four minutes at 1,000,000 accumulations
(about one second as hash joins). The checks rule nested loops out.
"""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from backoffice.reconcile import CHECKS, reconcile_breaches
from payouts.planner import without_nested_loops
from tests.factories import AccumulationFactory, ClientFactory

pytestmark = pytest.mark.django_db


def plan(sql: str) -> str:
    with connection.cursor() as cur:
        cur.execute(f"EXPLAIN {sql} LIMIT 100")  # noqa: S608 - constant SQL
        return "\n".join(row[0] for row in cur.fetchall())


def test_the_checks_run_with_nested_loops_ruled_out() -> None:
    with CaptureQueriesContext(connection) as queries:
        assert reconcile_breaches() == []
    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert statements[0] == "SET LOCAL enable_nestloop = off"
    assert statements[-1] == "RESET enable_nestloop"
    assert len(statements) == len(CHECKS) + 2


def test_the_state_check_is_a_hash_join_even_when_statistics_promise_many_matches() -> None:
    client = ClientFactory()
    AccumulationFactory.create_batch(50, client=client)
    with connection.cursor() as cur:
        cur.execute("ANALYZE payouts_accumulation")
    state_check = CHECKS[0][1]
    with transaction.atomic(), connection.cursor() as cur, without_nested_loops(cur):
        ruled_out = plan(state_check)
    assert "Nested Loop" not in ruled_out and "Hash" in ruled_out
    # After the block the session plans as before (the setting does not leak).
    with connection.cursor() as cur:
        cur.execute("SHOW enable_nestloop")
        assert cur.fetchone()[0] == "on"
