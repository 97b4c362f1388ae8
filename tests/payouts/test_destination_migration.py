"""Destinations stored before aliases were normalised (`usdt`/`erc20`) are rewritten in
ChangeNOW's names by migration 0006, with an audit event each; normalised ones are left."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from payouts.models import AuditEvent, Client
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db(transaction=True)


def migrate_payouts(target: str | None) -> None:
    executor = MigrationExecutor(connection)
    nodes = [("payouts", target)] if target else executor.loader.graph.leaf_nodes("payouts")
    executor.migrate(nodes)


def test_stored_aliases_become_changenow_names_with_an_audit_event() -> None:
    typed = ClientFactory(reference="typed")
    clean = ClientFactory(reference="clean")
    migrate_payouts("0005_currency_catalogue_and_payout_limits")
    Client.objects.filter(pk=typed.pk).update(payout_currency="USDT", payout_network="erc20")
    migrate_payouts(None)

    typed.refresh_from_db()
    clean.refresh_from_db()
    assert (typed.payout_currency, typed.payout_network) == ("usdt", "eth")
    assert (clean.payout_currency, clean.payout_network) == ("usdt", "eth")
    events = AuditEvent.objects.filter(kind="payout_destination_normalised")
    assert [e.object_id for e in events] == [str(typed.pk)]
    assert events[0].data["payout_network"] == {"old": "erc20", "new": "eth"}
