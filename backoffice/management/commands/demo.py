from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandParser

from backoffice.services import demo_setup


class Command(BaseCommand):
    help = "Create the demo merchants and an admin login (idempotent; never in production)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--admin-username", default="admin")
        parser.add_argument("--admin-password", required=True)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        result = demo_setup(
            admin_username=str(options["admin_username"]),
            admin_password=str(options["admin_password"]),
        )
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            self.stdout.write(f"demo clients: {result['clients']}")
