from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backoffice.break_glass import command_actor
from payouts.operator import OperatorError, order_retry


class Command(BaseCommand):
    help = "Resume a stopped order at the step it can safely continue from (audited)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=["batch", "payout"])
        parser.add_argument("order_id")
        parser.add_argument("--reason", required=True)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        try:
            result = order_retry(
                kind=str(options["kind"]),
                order_id=options["order_id"],
                actor=command_actor("retry"),
                reason=str(options["reason"]),
            )
        except OperatorError as exc:
            raise CommandError(str(exc)) from exc
        payload = {"id": result.order_id, "done": result.done, "detail": result.detail}
        self.stdout.write(json.dumps(payload) if options["json"] else result.detail)
