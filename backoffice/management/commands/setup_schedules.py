from __future__ import annotations

from django.core.management.base import BaseCommand

from backoffice.schedules import schedules_setup


class Command(BaseCommand):
    help = "Create or update the scheduled jobs by name."

    def handle(self, *args: object, **options: object) -> None:
        self.stdout.write(f"schedules: {', '.join(schedules_setup())}")
