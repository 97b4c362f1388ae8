from __future__ import annotations

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from backoffice.schedules import schedules_setup
from backoffice.services import roles_setup
from integrations.errors import ProviderError
from payouts.currencies import CurrencyError, currency_catalogue_refresh
from payouts.custody import opening_post
from payouts.engine import wallet
from payouts.services import runtime_settings_get
from payouts.transitions import Actor


class Command(BaseCommand):
    help = "Migrate, create roles, schedules and the run-time settings row (idempotent)."

    def handle(self, *args: object, **options: object) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        roles = roles_setup()
        schedules = schedules_setup()
        runtime_settings_get()
        self.stdout.write(f"migrated; roles: {', '.join(roles)}; schedules: {', '.join(schedules)}")
        try:
            listed = currency_catalogue_refresh(actor=Actor.system("bootstrap"))
            self.stdout.write(f"currency catalogue: {listed.listed} active currencies")
        except CurrencyError as exc:
            # Not fatal either: the daily schedule and the first client form load it later.
            self.stdout.write(f"currency catalogue not loaded yet: {exc}")
        if not settings.HOST_WALLET_ADDRESS:
            self.stdout.write("opening balance not booked: HOST_WALLET_ADDRESS is not set")
            return
        try:
            posted = opening_post(wallet=wallet(), actor=Actor.system("bootstrap"))
        except ProviderError as exc:
            # Not fatal: the node may start after the database. reconcile reports the host
            # wallet until `manage.py ledger_opening` books it.
            self.stdout.write(f"opening balance not booked yet (chain unreadable: {exc})")
            return
        if posted is not None:
            self.stdout.write(f"opening balance of the host wallet booked (#{posted.pk})")
