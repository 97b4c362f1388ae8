from __future__ import annotations

from django.core.management import call_command
from django.core.management.base import BaseCommand

from backoffice.schedules import schedules_setup
from backoffice.services import roles_setup
from payouts.services import runtime_settings_get


class Command(BaseCommand):
    help = "Migrate, create roles, schedules and the run-time settings row (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        roles = roles_setup()
        schedules = schedules_setup()
        runtime_settings_get()
        self.stdout.write(f"migrated; roles: {', '.join(roles)}; schedules: {', '.join(schedules)}")
