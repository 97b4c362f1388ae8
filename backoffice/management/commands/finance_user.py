"""`manage.py finance_user USERNAME --role viewer|operator|approver [--email E] [--json]`."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from backoffice.break_glass import command_actor
from backoffice.services_auth import (
    ROLE_GROUPS,
    FinanceUserError,
    finance_user_upsert,
)


class Command(BaseCommand):
    help = (
        "Create or update a staff user in one finance role; prints a new password once and, "
        "for approvers, the otpauth:// URI of a new authenticator (the old one stops working)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=list(ROLE_GROUPS))
        parser.add_argument("--email", default=None)
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: object, **options: object) -> None:
        try:
            result = finance_user_upsert(
                username=str(options["username"]),
                role=str(options["role"]),
                email=options["email"] if options["email"] is not None else None,
                actor=command_actor("finance_user"),
            )
        except FinanceUserError as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(result.as_json()))
            return
        verb = "created" if result.created else "updated"
        lines = [
            f"{result.username}: {verb}, role {result.role} (group {ROLE_GROUPS[result.role]})",
            f"password (shown once): {result.password}",
        ]
        if result.otpauth_uri:
            lines += [
                f"authenticator URI (shown once): {result.otpauth_uri}",
                "Add it to an authenticator app before the first sign-in; the login form asks "
                "for its 6-digit code. Backup codes: on the person's Two-factor page.",
            ]
        self.stdout.write("\n".join(lines))
