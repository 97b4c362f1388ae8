from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandParser

from payouts.tasks import sweep_payouts


class Command(BaseCommand):
    help = "Run the payout sweep now: one payout per client at or over its threshold."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        result = sweep_payouts(dry_run=bool(options["dry_run"]))
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        for payout in result["payouts"]:
            self.stdout.write(
                f"payout {payout['payout_id'] or '(dry run)'}: {payout['client']} "
                f"{payout['usdt']} USDT ({payout['rows']} rows)"
            )
        for skipped in result["skipped"]:
            self.stdout.write(f"skipped {skipped['client']}: {skipped['reason']}")
        self.stdout.write(f"created {result['created']}")
