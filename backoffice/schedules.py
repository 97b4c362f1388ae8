"""The table of scheduled jobs, upserted by name by `manage.py setup_schedules`.

Intervals here are the defaults; the jobs themselves read the run-time settings at every run.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    func: str
    minutes: int


SCHEDULES: tuple[ScheduledJob, ...] = (
    ScheduledJob("conversion_sweep", "batches.tasks.sweep_conversions", 5),
    ScheduledJob("advance", "payouts.tasks.advance_open_orders", 1),
    ScheduledJob("payout_sweep", "payouts.tasks.sweep_payouts", 5),
    ScheduledJob("watchdog", "backoffice.tasks.watchdog", 5),
    ScheduledJob("reconcile", "backoffice.tasks.reconcile", 24 * 60),
)


def schedules_setup() -> list[str]:
    """Create or update each schedule by name (idempotent); remove none we do not own."""
    from django_q.models import Schedule

    names = []
    for job in SCHEDULES:
        Schedule.objects.update_or_create(
            name=job.name,
            defaults={
                "func": job.func,
                "schedule_type": Schedule.MINUTES,
                "minutes": job.minutes,
                "repeats": -1,
            },
        )
        names.append(job.name)
    return names
