"""The table of scheduled jobs, upserted by name by `manage.py setup_schedules`.

Intervals of the sweeps and of `advance` come from the run-time settings (re-applied by
`schedules_setup()` whenever they change); the jobs also read the settings at every run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    func: str
    minutes: int
    interval_setting: str = ""


SCHEDULES: tuple[ScheduledJob, ...] = (
    ScheduledJob(
        "conversion_sweep",
        "backoffice.tasks.conversion_sweep",
        5,
        "conversion_sweep_interval_seconds",
    ),
    ScheduledJob("advance", "backoffice.tasks.advance", 1, "advance_interval_seconds"),
    ScheduledJob(
        "payout_sweep", "backoffice.tasks.payout_sweep", 5, "payout_sweep_interval_seconds"
    ),
    ScheduledJob("watchdog", "backoffice.tasks.watchdog", 5),
    ScheduledJob("reconcile", "backoffice.tasks.reconcile", 24 * 60),
    ScheduledJob("currency_refresh", "backoffice.tasks.currency_refresh", 24 * 60),
)


def job_minutes(job: ScheduledJob, runtime: object | None = None) -> int:
    """The job's interval in whole minutes (Django-Q schedules count in minutes)."""
    if not job.interval_setting:
        return job.minutes
    if runtime is None:
        from payouts.services import runtime_settings_get

        runtime = runtime_settings_get()
    seconds = int(getattr(runtime, job.interval_setting))
    return max(1, math.ceil(seconds / 60))


def schedules_setup() -> list[str]:
    """Create or update each schedule by name (idempotent); remove none we do not own."""
    from django_q.models import Schedule

    from payouts.services import runtime_settings_get

    runtime = runtime_settings_get()
    names = []
    for job in SCHEDULES:
        Schedule.objects.update_or_create(
            name=job.name,
            defaults={
                "func": job.func,
                "schedule_type": Schedule.MINUTES,
                "minutes": job_minutes(job, runtime),
                "repeats": -1,
            },
        )
        names.append(job.name)
    return names
