"""Stored payout currencies and networks in ChangeNOW's names (`usdt`/`erc20` was stored as
typed before aliases were normalised on save): the same destination, one audit event each."""

from __future__ import annotations

from typing import Any

from django.db import migrations


def normalise(apps: Any, schema_editor: Any) -> None:
    from payouts.currencies import currency_normalise

    client_model = apps.get_model("payouts", "Client")
    audit_model = apps.get_model("payouts", "AuditEvent")
    for client in client_model.objects.all().iterator():
        currency, network = currency_normalise(
            currency=client.payout_currency, network=client.payout_network
        )
        if (currency, network) == (client.payout_currency, client.payout_network):
            continue
        audit_model.objects.create(
            object_type="client",
            object_id=str(client.pk),
            kind="payout_destination_normalised",
            actor="system:migration payouts.0006",
            reason="currency and network stored in ChangeNOW's names; same destination",
            data={
                "payout_currency": {"old": client.payout_currency, "new": currency},
                "payout_network": {"old": client.payout_network, "new": network},
            },
        )
        client_model.objects.filter(pk=client.pk).update(
            payout_currency=currency, payout_network=network
        )


class Migration(migrations.Migration):
    dependencies = [("payouts", "0005_currency_catalogue_and_payout_limits")]

    operations = [migrations.RunPython(normalise, migrations.RunPython.noop)]
