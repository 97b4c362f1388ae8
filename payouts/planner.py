"""Planner settings for whole-table statements whose row estimates cannot be trusted.

Statistics lag behind a bulk move (taken while the rows were pending, they estimate one
converted row), and a `LIMIT` on a check that expects no rows makes the planner bet on
finding them early. Both lead it to a nested loop over a million rows where a hash join
takes seconds (measured: the payout reservation 63 s instead of 4.5 s at 200,000 rows,
reconcile's first check over four minutes instead of about one second at 1,000,000).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def without_nested_loops(cursor: Any) -> Iterator[None]:
    """Rule nested-loop joins out for the statements run inside, within the current
    transaction (`SET LOCAL`; an error rolls the setting back with the transaction)."""
    cursor.execute("SET LOCAL enable_nestloop = off")
    yield
    cursor.execute("RESET enable_nestloop")
