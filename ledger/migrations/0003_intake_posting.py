from django.db import migrations

# Intake is booked by the database itself, in the statement that inserts the payments: one
# ledger transaction per accumulation (host_wallet +ETH, clients:<reference> -ETH), set-based
# for any number of rows, so no code path can credit a client without the books seeing it.
# It writes two legs from one amount and counts what it wrote: balanced by construction,
# which is why the commit-time check (0002) skips intake postings. (The backfill, 0004,
# writes intake legs itself: it says so with the transaction-local setting
# `ledger.backfill`.)
FORWARD = r"""
CREATE FUNCTION ledger_post_intake() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    rows_in bigint;
    legs bigint;
BEGIN
    INSERT INTO ledger_account (name, asset, kind)
    SELECT DISTINCT 'clients:' || c.reference, 'eth', 'liability'
    FROM new_rows n JOIN payouts_client c ON c.id = n.client_id
    UNION ALL SELECT 'host_wallet', 'eth', 'asset'
    ON CONFLICT (name, asset) DO NOTHING;

    WITH header AS (
        INSERT INTO ledger_ledgertransaction (kind, memo, actor, tx_hash, created_at,
                                              accumulation_id)
        SELECT 'intake', 'payment ' || n.payment_id, 'system:intake', '', now(), n.id
        FROM new_rows n
        RETURNING id, accumulation_id
    ), wallet AS (
        SELECT id FROM ledger_account WHERE name = 'host_wallet' AND asset = 'eth'
    )
    INSERT INTO ledger_leg (transaction_id, account_id, amount)
    SELECT h.id, w.id, n.eth
    FROM header h JOIN new_rows n ON n.id = h.accumulation_id CROSS JOIN wallet w
    UNION ALL
    SELECT h.id, a.id, -n.eth
    FROM header h JOIN new_rows n ON n.id = h.accumulation_id
    JOIN payouts_client c ON c.id = n.client_id
    JOIN ledger_account a ON a.name = 'clients:' || c.reference AND a.asset = 'eth';
    GET DIAGNOSTICS legs = ROW_COUNT;
    SELECT count(*) INTO rows_in FROM new_rows;
    IF legs <> 2 * rows_in THEN
        RAISE EXCEPTION 'intake posting wrote % legs for % payments', legs, rows_in
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER ledger_intake AFTER INSERT ON payouts_accumulation
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_post_intake();
"""

REVERSE = r"""
DROP TRIGGER IF EXISTS ledger_intake ON payouts_accumulation;
DROP FUNCTION IF EXISTS ledger_post_intake();
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0002_rules")]
    operations = [migrations.RunSQL(FORWARD, REVERSE)]
