"""Search indexes, built CONCURRENTLY: the accumulations table may hold millions of rows
and takes payments while this runs."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("batches", "0002_wallet_recovery"),
        ("payouts", "0006_normalise_client_destinations"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="accumulation",
            index=models.Index(
                condition=models.Q(("order_id", ""), _negated=True),
                fields=["order_id"],
                name="acc_order_id_idx",
            ),
        ),
        AddIndexConcurrently(
            model_name="transfertx",
            index=models.Index(
                fields=["tx_hash"], name="transfertx_hash_prefix", opclasses=["varchar_pattern_ops"]
            ),
        ),
    ]
