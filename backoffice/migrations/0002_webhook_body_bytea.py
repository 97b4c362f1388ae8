"""Webhook bodies become `bytea`, kept byte for byte (NUL bytes and invalid UTF-8 included).

Existing bodies were text: they are converted to their UTF-8 bytes, so every stored body reads
back exactly as it was shown before. Django's own type change would cast text to bytea, which
reads backslashes in the text as escapes and fails on the `\\xNN` escapes older code wrote.
"""

from __future__ import annotations

from django.db import migrations

import backoffice.models


class Migration(migrations.Migration):
    dependencies = [("backoffice", "0001_initial")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    sql=(
                        "ALTER TABLE backoffice_webhookevent "
                        "ALTER COLUMN body TYPE bytea USING convert_to(body, 'UTF8')"
                    ),
                    # Back to text: bytes that are not text (NUL, invalid UTF-8) have no text
                    # form, so the way back writes every non-ASCII byte as an octal escape.
                    reverse_sql=(
                        "ALTER TABLE backoffice_webhookevent "
                        "ALTER COLUMN body TYPE text USING encode(body, 'escape')"
                    ),
                )
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="webhookevent",
                    name="body",
                    field=backoffice.models.RawBodyField(
                        help_text="The raw body as received, byte for byte."
                    ),
                )
            ],
        )
    ]
