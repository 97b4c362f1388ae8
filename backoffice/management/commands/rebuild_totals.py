from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandParser

from backoffice.break_glass import command_actor
from payouts.totals import accumulation_totals_rebuild


class Command(BaseCommand):
    help = (
        "Recount the dashboard's kept totals per accumulation state from the rows (when "
        "reconcile reports 'totals: kept per state equal the rows'). Moves no money."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--reason", required=True)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        try:
            result = accumulation_totals_rebuild(
                actor=command_actor("rebuild_totals"), reason=str(options["reason"])
            )
        except ValueError as exc:
            self.stderr.write(f"totals not rebuilt: {exc}")
            raise SystemExit(1) from None
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        changed = ", ".join(result["changed"]) or "none (they were right)"
        self.stdout.write(f"kept totals recounted from the rows; states corrected: {changed}")
