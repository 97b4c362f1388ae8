from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandParser

from backoffice.services import system_status


class Command(BaseCommand):
    help = "Counts and sums of accumulations, batches and payouts per state."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        status = system_status()
        if options["json"]:
            self.stdout.write(json.dumps(status))
            return
        self.stdout.write("accumulations:")
        for state, row in status["accumulations"].items():
            self.stdout.write(
                f"  {state:<12} {row['count']:>10}  eth {row['eth']:>24}  usd {row['usd']:>16}"
                f"  usdt {row['usdt']:>16}"
            )
        for kind in ("batches", "payouts"):
            counts = ", ".join(f"{s} {n}" for s, n in status[kind].items())
            self.stdout.write(f"{kind}: {counts}")
        self.stdout.write(f"platform usdt: {status['platform_usdt']}")
