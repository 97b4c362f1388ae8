from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from payouts.operator import OperatorError, order_force_close
from payouts.transitions import Actor


class Command(BaseCommand):
    help = "Close an order for good, releasing its rows (or writing them off), with a reason."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=["batch", "payout"])
        parser.add_argument("order_id")
        parser.add_argument("--reason", required=True)
        parser.add_argument("--write-off", action="store_true")
        parser.add_argument(
            "--chain-checked",
            action="store_true",
            help="I checked the chain: the broadcast transaction will not confirm.",
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        try:
            result = order_force_close(
                kind=str(options["kind"]),
                order_id=options["order_id"],
                actor=Actor.system("manage.py force_close"),
                reason=str(options["reason"]),
                write_off=bool(options["write_off"]),
                chain_checked=bool(options["chain_checked"]),
            )
        except OperatorError as exc:
            raise CommandError(str(exc)) from exc
        payload = {"id": result.order_id, "done": result.done, "detail": result.detail}
        self.stdout.write(json.dumps(payload) if options["json"] else result.detail)
