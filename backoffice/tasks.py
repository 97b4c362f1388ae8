"""Django-Q2 tasks of the project layer: they only call services."""

from __future__ import annotations


def watchdog() -> dict[str, object]:
    from backoffice.operations import watchdog_run

    return watchdog_run()


def reconcile() -> dict[str, object]:
    from backoffice.operations import reconcile_run

    return reconcile_run()
