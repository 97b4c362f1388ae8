from django.db import migrations

# The balance check, set-based: the first deferred firing in a database transaction checks
# every ledger transaction that database transaction created, in one query, and leaves a
# watermark (a transaction-local setting); the firings for the rows below it return at once.
# A million intake postings inserted by one statement are checked in one pass, not a million.
# Legs for a header below the watermark (already checked) are refused: a checked transaction
# cannot change afterwards.
FORWARD = r"""
CREATE INDEX ledger_tx_xact ON ledger_ledgertransaction (xact);

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
    stray bigint;
BEGIN
    SELECT t.id INTO stray FROM new_legs l
    JOIN ledger_ledgertransaction t ON t.id = l.transaction_id
    WHERE t.xact <> pg_current_xact_id() OR t.id <= done LIMIT 1;
    IF stray IS NOT NULL THEN
        RAISE EXCEPTION 'legs may not be added to ledger transaction % after it was committed '
            'or checked', stray USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
"""

REVERSE = r"""
DROP INDEX IF EXISTS ledger_tx_xact;
CREATE OR REPLACE FUNCTION ledger_check_balanced() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    legs integer;
    off text;
BEGIN
    SELECT count(*) INTO legs FROM ledger_leg WHERE transaction_id = NEW.id;
    IF legs < 2 THEN
        RAISE EXCEPTION 'ledger transaction % (%) has % leg(s); a posting needs two or more',
            NEW.id, NEW.kind, legs USING ERRCODE = 'check_violation';
    END IF;
    SELECT string_agg(asset || ' off by ' || total, ', ') INTO off FROM (
        SELECT a.asset, sum(l.amount) AS total
        FROM ledger_leg l JOIN ledger_account a ON a.id = l.account_id
        WHERE l.transaction_id = NEW.id
        GROUP BY a.asset HAVING sum(l.amount) <> 0
    ) s;
    IF off IS NOT NULL THEN
        RAISE EXCEPTION 'ledger transaction % (%) does not balance: %', NEW.id, NEW.kind, off
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0005_leg_index_covers_amount")]
    operations = [migrations.RunSQL(FORWARD, REVERSE)]
