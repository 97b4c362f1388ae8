from django.db import migrations

# The ledger's rules live in the database (see ledger.models):
# - a deferred constraint trigger checks, at commit, that every posting has two or more legs
#   and balances per asset. It is set-based: its first firing in a database transaction
#   checks every posting that transaction created, in one query, and leaves a watermark (a
#   transaction-local setting); the firings for the rows below it return at once, so a
#   million postings cost one check. Intake postings are spared: the intake trigger (0003)
#   writes them balanced by construction, and only a trigger may write their legs.
# - legs can only be added in the database transaction that created their header, and not
#   after the header was checked;
# - the three tables refuse UPDATE and DELETE.
FORWARD = r"""
ALTER TABLE ledger_ledgertransaction
    ADD COLUMN xact xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX ledger_tx_xact ON ledger_ledgertransaction (xact) WHERE kind <> 'intake';

CREATE FUNCTION ledger_account_kind(name text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN name = 'host_wallet' OR name LIKE 'in\_transit:%' THEN 'asset'
        WHEN name LIKE 'clients:%' THEN 'liability'
        WHEN name = 'platform_fees' THEN 'income'
        WHEN name IN ('network_fees', 'losses') THEN 'expense'
        WHEN name = 'owner_equity' THEN 'equity'
    END
$$;

CREATE FUNCTION ledger_check_balanced() RETURNS trigger
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
    WHERE xact = pg_current_xact_id() AND id > done AND kind <> 'intake';
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

CREATE CONSTRAINT TRIGGER ledger_transaction_balanced
    AFTER INSERT ON ledger_ledgertransaction
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NEW.kind <> 'intake')
    EXECUTE FUNCTION ledger_check_balanced();

CREATE FUNCTION ledger_legs_beside_header() RETURNS trigger
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

CREATE TRIGGER ledger_leg_beside_header
    AFTER INSERT ON ledger_leg REFERENCING NEW TABLE AS new_legs
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_legs_beside_header();

CREATE FUNCTION ledger_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only (% on % refused); post a correcting transaction',
        TG_OP, TG_TABLE_NAME USING ERRCODE = 'check_violation';
END $$;

CREATE TRIGGER ledger_account_append_only BEFORE UPDATE OR DELETE ON ledger_account
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_transaction_append_only BEFORE UPDATE OR DELETE
    ON ledger_ledgertransaction FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_leg_append_only BEFORE UPDATE OR DELETE ON ledger_leg
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

INSERT INTO ledger_account (name, asset, kind) VALUES
    ('host_wallet', 'eth', 'asset'), ('host_wallet', 'usdt', 'asset'),
    ('platform_fees', 'usdt', 'income'), ('network_fees', 'eth', 'expense'),
    ('losses', 'eth', 'expense'), ('losses', 'usdt', 'expense'),
    ('owner_equity', 'eth', 'equity'), ('owner_equity', 'usdt', 'equity');
"""

REVERSE = r"""
DROP TRIGGER IF EXISTS ledger_leg_append_only ON ledger_leg;
DROP TRIGGER IF EXISTS ledger_transaction_append_only ON ledger_ledgertransaction;
DROP TRIGGER IF EXISTS ledger_account_append_only ON ledger_account;
DROP FUNCTION IF EXISTS ledger_append_only();
DROP TRIGGER IF EXISTS ledger_leg_beside_header ON ledger_leg;
DROP FUNCTION IF EXISTS ledger_legs_beside_header();
DROP TRIGGER IF EXISTS ledger_transaction_balanced ON ledger_ledgertransaction;
DROP FUNCTION IF EXISTS ledger_check_balanced();
DROP FUNCTION IF EXISTS ledger_account_kind(text);
DROP INDEX IF EXISTS ledger_tx_xact;
ALTER TABLE ledger_ledgertransaction DROP COLUMN IF EXISTS xact;
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]
    operations = [migrations.RunSQL(FORWARD, REVERSE)]
