from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandParser

from payouts.tasks import advance_open_orders


class Command(BaseCommand):
    help = "Run one step of every open batch and payout."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        result = advance_open_orders()
        if options["json"]:
            self.stdout.write(json.dumps(result))
            return
        for order in result["orders"]:
            self.stdout.write(f"{order['kind']} {order['id']}: {order['from']} -> {order['to']}")
        self.stdout.write(f"advanced {result['advanced']}")
