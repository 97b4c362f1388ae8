from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backoffice.break_glass import command_actor
from payouts.operator import OperatorError, order_sync


class Command(BaseCommand):
    help = "Poll the provider now for one order (batch or payout) by id."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=["batch", "payout"])
        parser.add_argument("order_id")
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        try:
            result = order_sync(
                kind=str(options["kind"]),
                order_id=options["order_id"],
                actor=command_actor("sync"),
            )
        except OperatorError as exc:
            raise CommandError(str(exc)) from exc
        payload = {"id": result.order_id, "done": result.done, "detail": result.detail}
        self.stdout.write(json.dumps(payload) if options["json"] else result.detail)
