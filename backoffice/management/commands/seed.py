from __future__ import annotations

import json
import time

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backoffice.services import demo_seed


class Command(BaseCommand):
    help = (
        "Create N demo clients and M pending accumulations, set-based (for demos and benchmarks)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--clients", type=int, default=10)
        parser.add_argument("--accumulations", type=int, default=100)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        clients, accumulations = int(options["clients"]), int(options["accumulations"])
        if clients < 1 or accumulations < 0:
            raise CommandError("--clients must be >= 1 and --accumulations >= 0")
        started = time.perf_counter()
        result = demo_seed(clients=clients, accumulations=accumulations)
        result["seconds"] = f"{time.perf_counter() - started:.2f}"
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            self.stdout.write(
                f"{result['clients']} seed clients, {result['accumulations']} pending "
                f"accumulations created in {result['seconds']} s"
            )
