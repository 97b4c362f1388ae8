"""Kept totals per accumulation state (payouts.models.AccumulationTotal).

Statement-level triggers with transition tables append each statement's delta per state,
so a bulk move costs one aggregate over the rows it moved and a few inserted rows, and an
intake one row. Creating the triggers takes a lock that holds off writes to the
accumulations until this migration commits, so the first fill below sees every row once and
misses none (intake waits for it: about a second per million accumulations).
"""

import django.db.models.functions.datetime
from django.db import migrations, models

import payouts.models

# plpgsql plans a statement when it first runs it, so each branch may name only the
# transition tables of the triggers that reach it (an INSERT has no old_rows).
FUNCTION = """
CREATE FUNCTION payouts_accumulation_totals() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO payouts_accumulationtotal (state, row_count, eth, usd, usdt)
        SELECT state, count(*), sum(eth), sum(usd), coalesce(sum(usdt), 0)
        FROM new_rows GROUP BY state;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO payouts_accumulationtotal (state, row_count, eth, usd, usdt)
        SELECT d.state, sum(d.n), sum(d.eth), sum(d.usd), sum(d.usdt)
        FROM (
            SELECT state, 1 AS n, eth, usd, coalesce(usdt, 0) AS usdt FROM new_rows
            UNION ALL
            SELECT state, -1, -eth, -usd, -coalesce(usdt, 0) FROM old_rows
        ) d
        GROUP BY d.state
        -- A statement that moved no row between states and changed no amount adds nothing.
        HAVING sum(d.n) <> 0 OR sum(d.eth) <> 0 OR sum(d.usd) <> 0 OR sum(d.usdt) <> 0;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO payouts_accumulationtotal (state, row_count, eth, usd, usdt)
        SELECT state, -count(*), -sum(eth), -sum(usd), -coalesce(sum(usdt), 0)
        FROM old_rows GROUP BY state;
    ELSE
        DELETE FROM payouts_accumulationtotal;
    END IF;
    RETURN NULL;
END
$$;
"""

TRIGGERS = """
CREATE TRIGGER payouts_acc_totals_insert AFTER INSERT ON payouts_accumulation
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION payouts_accumulation_totals();
CREATE TRIGGER payouts_acc_totals_update AFTER UPDATE ON payouts_accumulation
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION payouts_accumulation_totals();
CREATE TRIGGER payouts_acc_totals_delete AFTER DELETE ON payouts_accumulation
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION payouts_accumulation_totals();
CREATE TRIGGER payouts_acc_totals_truncate AFTER TRUNCATE ON payouts_accumulation
    FOR EACH STATEMENT EXECUTE FUNCTION payouts_accumulation_totals();
"""

FILL = """
INSERT INTO payouts_accumulationtotal (state, row_count, eth, usd, usdt)
SELECT state, count(*), sum(eth), sum(usd), coalesce(sum(usdt), 0)
FROM payouts_accumulation GROUP BY state;
"""

DROP = """
DROP TRIGGER IF EXISTS payouts_acc_totals_insert ON payouts_accumulation;
DROP TRIGGER IF EXISTS payouts_acc_totals_update ON payouts_accumulation;
DROP TRIGGER IF EXISTS payouts_acc_totals_delete ON payouts_accumulation;
DROP TRIGGER IF EXISTS payouts_acc_totals_truncate ON payouts_accumulation;
DROP FUNCTION IF EXISTS payouts_accumulation_totals();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("payouts", "0008_written_off_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="AccumulationTotal",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("state", models.CharField(max_length=16)),
                ("row_count", models.BigIntegerField()),
                ("eth", payouts.models.AmountField(decimal_places=18, max_digits=48)),
                ("usd", payouts.models.AmountField(decimal_places=18, max_digits=48)),
                ("usdt", payouts.models.AmountField(decimal_places=18, max_digits=48)),
                (
                    "created_at",
                    models.DateTimeField(db_default=django.db.models.functions.datetime.Now()),
                ),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(
                            (
                                "state__in",
                                [
                                    "pending",
                                    "converting",
                                    "converted",
                                    "paying",
                                    "paid",
                                    "written_off",
                                ],
                            )
                        ),
                        name="acctotal_state_valid",
                    )
                ],
            },
        ),
        migrations.RunSQL(FUNCTION + TRIGGERS + FILL, DROP),
    ]
