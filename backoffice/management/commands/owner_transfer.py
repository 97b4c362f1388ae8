from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandParser

from backoffice.break_glass import command_actor
from payouts.custody import CustodyError, owner_transfer_book
from payouts.engine import wallet


class Command(BaseCommand):
    help = (
        "Book the owner's top-up or withdrawal of the host wallet, after verifying the "
        "transaction on chain (to or from the host wallet, mined deep enough, not yet booked)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("tx_hash", metavar="HASH")
        parser.add_argument("--reason", required=True)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        try:
            booked = owner_transfer_book(
                wallet=wallet(),
                tx_hash=str(options["tx_hash"]),
                reason=str(options["reason"]),
                actor=command_actor("owner_transfer"),
            )
        except CustodyError as exc:
            if options["json"]:
                self.stdout.write(json.dumps({"booked": False, "error": str(exc)}))
            else:
                self.stderr.write(f"not booked: {exc}")
            raise SystemExit(1) from None
        if options["json"]:
            self.stdout.write(json.dumps(booked.as_json()))
        else:
            self.stdout.write(
                f"booked owner {booked.direction.replace('_', '-')} of {booked.amount} "
                f"{booked.asset.upper()} ({booked.tx_hash}) as ledger transaction "
                f"{booked.transaction_id}"
            )
