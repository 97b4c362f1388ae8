from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandParser

from backoffice.reconcile import reconcile_run


class Command(BaseCommand):
    help = "Check every money invariant on live data; exit 1 on any breach."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        report = reconcile_run()
        if options["json"]:
            self.stdout.write(json.dumps(report))
        else:
            for breach in report["breaches"]:
                self.stdout.write(
                    f"BREACH [{breach['invariant']}] {breach['object']}: {breach['detail']}"
                )
            self.stdout.write("reconcile: ok" if report["ok"] else "reconcile: BREACHES FOUND")
        if not report["ok"]:
            raise SystemExit(1)
