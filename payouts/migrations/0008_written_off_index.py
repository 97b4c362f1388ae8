"""The dashboard's written-off figures through their own partial index, built CONCURRENTLY:
the accumulations table may hold millions of rows and takes payments while this runs."""

from django.contrib.postgres.operations import AddIndexConcurrently
from django.db import migrations, models


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("payouts", "0007_search_indexes"),
    ]

    operations = [
        AddIndexConcurrently(
            model_name="accumulation",
            index=models.Index(
                condition=models.Q(("state", "written_off")),
                fields=["id"],
                name="acc_written_off_idx",
            ),
        ),
    ]
