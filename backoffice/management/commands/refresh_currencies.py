from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandParser

from payouts.currencies import CurrencyError, currency_catalogue_refresh
from payouts.transitions import Actor


class Command(BaseCommand):
    help = (
        "Refresh the currency catalogue from ChangeNOW's list of active currencies (a "
        "schedule does it daily). Exit 1, catalogue unchanged, if the list cannot be read."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        try:
            result = currency_catalogue_refresh(actor=Actor.system("manage.py refresh_currencies"))
        except CurrencyError as exc:
            self.stderr.write(str(exc))
            raise SystemExit(1) from None
        if options["json"]:
            self.stdout.write(json.dumps(result.as_json()))
            return
        self.stdout.write(
            f"{result.listed} active currencies listed; added {len(result.added)}, "
            f"reactivated {len(result.reactivated)}, deactivated {len(result.deactivated)}"
            + (f" ({', '.join(result.deactivated)})" if result.deactivated else "")
        )
