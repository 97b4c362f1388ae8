from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandParser

from integrations.errors import ProviderError
from payouts.custody import opening_post
from payouts.engine import wallet
from payouts.transitions import Actor


class Command(BaseCommand):
    help = (
        "Book the host wallet's opening balance (what the chain holds beyond what the ledger "
        "explains) as owner equity, once. bootstrap runs it; exit 1 if the chain is unreadable."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        try:
            posted = opening_post(wallet=wallet(), actor=Actor.system("bootstrap"))
        except (ProviderError, ValueError) as exc:  # ValueError: no host wallet address
            self.stderr.write(f"opening balance not booked: the chain could not be read: {exc}")
            raise SystemExit(1) from None
        result = {"booked": posted is not None, "transaction": posted.pk if posted else None}
        if options["json"]:
            self.stdout.write(json.dumps(result))
        else:
            self.stdout.write(
                f"opening balance booked as ledger transaction {posted.pk}"
                if posted
                else "opening balance: nothing to book (already booked or nothing held)"
            )
