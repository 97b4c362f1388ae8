"""Scheduled jobs (the `func` of each schedule): each records a heartbeat and calls the
domain task or service; a job that raises is recorded as a failed run and re-raised."""

from __future__ import annotations

from typing import Any

from backoffice.operations import job_heartbeat


def conversion_sweep() -> dict[str, Any]:
    from batches.tasks import sweep_conversions

    with job_heartbeat("conversion_sweep") as summary:
        summary.update(sweep_conversions())
    return summary


def advance() -> dict[str, Any]:
    from payouts.tasks import advance_open_orders

    with job_heartbeat("advance") as summary:
        summary.update(advance_open_orders())
    return summary


def payout_sweep() -> dict[str, Any]:
    from payouts.tasks import sweep_payouts

    with job_heartbeat("payout_sweep") as summary:
        summary.update(sweep_payouts())
    return summary


def watchdog() -> dict[str, Any]:
    from backoffice.operations import watchdog_run

    with job_heartbeat("watchdog") as summary:
        summary.update(watchdog_run())
    return summary


def reconcile() -> dict[str, Any]:
    from backoffice.reconcile import reconcile_run

    with job_heartbeat("reconcile") as summary:
        report = reconcile_run(alert=True)
        summary.update(ok=report["ok"], breaches=len(report["breaches"]))
    return summary


def currency_refresh() -> dict[str, Any]:
    from payouts.currencies import currency_catalogue_refresh
    from payouts.transitions import Actor

    with job_heartbeat("currency_refresh") as summary:
        summary.update(currency_catalogue_refresh(actor=Actor.system("currency_refresh")).as_json())
    return summary
