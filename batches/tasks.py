"""Django-Q2 tasks of the batches app: they only call services."""

from __future__ import annotations

from batches.services import batch_sweep
from payouts.transitions import Actor


def sweep_conversions() -> dict[str, object]:
    return batch_sweep(actor=Actor.system("conversion_sweep")).as_json()
