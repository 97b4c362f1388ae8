from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandParser

from batches.tasks import conversion_sweep
from payouts.transitions import Actor


class Command(BaseCommand):
    help = "Run the conversion sweep now (single-flight; --dry-run writes nothing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dry-run", action="store_true")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        result = conversion_sweep(
            actor=Actor.system("manage.py sweep"), dry_run=bool(options["dry_run"])
        )
        if options["json"]:
            self.stdout.write(json.dumps(result.as_json()))
            return
        if result.created:
            self.stdout.write(
                f"batch {result.batch_id}: {result.rows} rows, {result.eth} ETH, "
                f"{result.usd} USD ({result.reason})"
            )
        else:
            self.stdout.write(
                f"no batch ({result.reason}): {result.rows} pending rows, {result.eth} ETH, "
                f"{result.usd} USD"
            )
