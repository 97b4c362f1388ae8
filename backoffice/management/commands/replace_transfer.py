from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backoffice.break_glass import command_actor
from payouts.operator import OperatorError, order_replace_transfer


class Command(BaseCommand):
    help = (
        "Speed up the order's pending transfer (same payment, both fee caps raised at least "
        "12.5%) or cancel it (--cancel: a zero-value transfer to the host wallet at its nonce)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=["batch", "payout"])
        parser.add_argument("order_id")
        parser.add_argument("--reason", required=True)
        parser.add_argument("--cancel", action="store_true")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        try:
            result = order_replace_transfer(
                kind=str(options["kind"]),
                order_id=options["order_id"],
                actor=command_actor("replace_transfer"),
                reason=str(options["reason"]),
                cancel=bool(options["cancel"]),
            )
        except OperatorError as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(result.data))
        else:
            self.stdout.write(result.detail)
