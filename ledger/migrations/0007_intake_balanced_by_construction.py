from django.db import migrations

# Intake is the hot path (one posting per webhook). Its posting is written only by the
# `ledger_intake` trigger, which makes two legs from one amount and counts what it wrote, so
# it balances by construction: the commit-time check is spared for it, and a leg for an
# intake posting written by anything but a trigger is refused. reconcile still re-sums every
# posting, intake included. (The backfill, migration 0004, writes intake legs itself: it says
# so with the transaction-local setting `ledger.backfill`.)
FORWARD = r"""
CREATE OR REPLACE FUNCTION ledger_post_intake() RETURNS trigger
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

DROP TRIGGER ledger_transaction_balanced ON ledger_ledgertransaction;
CREATE CONSTRAINT TRIGGER ledger_transaction_balanced
    AFTER INSERT ON ledger_ledgertransaction
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.kind <> 'intake')
    EXECUTE FUNCTION ledger_check_balanced();

CREATE OR REPLACE FUNCTION ledger_check_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    done bigint := coalesce(nullif(current_setting('ledger.checked_upto', true), ''), '0')::bigint;
    top bigint;
    bad record;
BEGIN
    IF NEW.id <= done THEN
        RETURN NULL;
    END IF;
    SELECT max(id) INTO top FROM ledger_ledgertransaction
    WHERE xact = pg_current_xact_id() AND id > done;
    SELECT p.id, p.kind, sum(p.n) AS legs,
           string_agg(p.asset || ' off by ' || p.total, ', ') FILTER (WHERE p.total <> 0) AS off
    INTO bad
    FROM (
        SELECT t.id, t.kind, a.asset, count(l.id) AS n, coalesce(sum(l.amount), 0) AS total
        FROM ledger_ledgertransaction t
        LEFT JOIN ledger_leg l ON l.transaction_id = t.id
        LEFT JOIN ledger_account a ON a.id = l.account_id
        WHERE t.xact = pg_current_xact_id() AND t.id > done AND t.id <= top
          AND t.kind <> 'intake'
        GROUP BY t.id, t.kind, a.asset
    ) p
    GROUP BY p.id, p.kind
    HAVING sum(p.n) < 2 OR bool_or(p.total <> 0)
    ORDER BY p.id
    LIMIT 1;
    IF FOUND THEN
        IF bad.legs < 2 THEN
            RAISE EXCEPTION 'ledger transaction % (%) has % leg(s); a posting needs two or more',
                bad.id, bad.kind, bad.legs USING ERRCODE = 'check_violation';
        END IF;
        RAISE EXCEPTION 'ledger transaction % (%) does not balance: %', bad.id, bad.kind, bad.off
            USING ERRCODE = 'check_violation';
    END IF;
    PERFORM set_config('ledger.checked_upto', top::text, true);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ledger_legs_beside_header() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    done bigint := coalesce(nullif(current_setting('ledger.checked_upto', true), ''), '0')::bigint;
    stray record;
BEGIN
    SELECT t.id, t.kind INTO stray FROM new_legs l
    JOIN ledger_ledgertransaction t ON t.id = l.transaction_id
    WHERE t.xact <> pg_current_xact_id() OR (t.id <= done AND t.kind <> 'intake')
       OR (t.kind = 'intake' AND pg_trigger_depth() < 2
           AND current_setting('ledger.backfill', true) IS DISTINCT FROM 'on')
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'legs may not be added to ledger transaction % (%): it was committed '
            'or checked, or it is an intake posting (only the intake trigger writes those)',
            stray.id, stray.kind USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0006_check_once_per_commit")]
    operations = [migrations.RunSQL(FORWARD, migrations.RunSQL.noop)]
