from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandParser

from integrations.assets import format_amount
from ledger.services import balances_get


class Command(BaseCommand):
    help = (
        "Every ledger account's balance per asset, in its natural sign: what the host wallet "
        "holds, what is owed to each client, fees earned, gas and losses borne."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        balances = balances_get()
        if options["json"]:
            payload = {
                "accounts": {
                    name: {asset: format_amount(value) for asset, value in assets.items()}
                    for name, assets in balances.items()
                }
            }
            self.stdout.write(json.dumps(payload))
            return
        width = max((len(name) for name in balances), default=10)
        for name, assets in balances.items():
            for asset, value in assets.items():
                self.stdout.write(f"{name:<{width}}  {asset.upper():<4}  {format_amount(value)}")
