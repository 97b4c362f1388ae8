from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backoffice.break_glass import command_actor
from payouts.operator import OperatorError, order_force_close


class Command(BaseCommand):
    help = (
        "Close an order for good with a reason. Rows are released only when the chain proves "
        "no funds left or with a proved refund (--refund-tx), or written off (--write-off)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=["batch", "payout"])
        parser.add_argument("order_id")
        parser.add_argument("--reason", required=True)
        parser.add_argument("--write-off", action="store_true")
        parser.add_argument(
            "--refund-tx",
            default="",
            metavar="HASH",
            help="ChangeNOW's refund transaction to the host wallet (verified on chain and "
            "with ChangeNOW before the rows are released).",
        )
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        try:
            result = order_force_close(
                kind=str(options["kind"]),
                order_id=options["order_id"],
                actor=command_actor("force_close"),
                reason=str(options["reason"]),
                write_off=bool(options["write_off"]),
                refund_tx=str(options["refund_tx"] or ""),
            )
        except OperatorError as exc:
            raise CommandError(str(exc)) from exc
        payload = {"id": result.order_id, "done": result.done, "detail": result.detail}
        self.stdout.write(json.dumps(payload) if options["json"] else result.detail)
