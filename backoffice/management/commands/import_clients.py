from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from payouts.services import client_import_csv
from payouts.transitions import Actor


class Command(BaseCommand):
    help = "Upsert clients by reference from a CSV file; any invalid line imports nothing."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", type=Path)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        path: Path = options["file"]  # type: ignore[assignment]
        if not path.is_file():
            raise CommandError(f"{path}: no such file")
        with path.open(newline="", encoding="utf-8-sig") as handle:
            result = client_import_csv(lines=handle, actor=Actor.system("manage.py import_clients"))
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "ok": result.ok,
                        "created": result.created,
                        "updated": result.updated,
                        "unchanged": result.unchanged,
                        "errors": [{"line": n, "error": e} for n, e in result.errors],
                    }
                )
            )
        else:
            for line, error in result.errors:
                self.stderr.write(f"{path}:{line}: {error}")
        if not result.ok:
            raise SystemExit(1)
        if not options["json"]:
            self.stdout.write(
                f"created {result.created}, updated {result.updated}, unchanged {result.unchanged}"
            )
