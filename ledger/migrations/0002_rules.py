from django.db import migrations

# The ledger's rules live in the database (see ledger.models): balance per asset checked at
# commit, legs only beside their header, append-only tables.
FORWARD = r"""
ALTER TABLE ledger_ledgertransaction
    ADD COLUMN xact xid8 NOT NULL DEFAULT pg_current_xact_id();

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

CREATE CONSTRAINT TRIGGER ledger_transaction_balanced
    AFTER INSERT ON ledger_ledgertransaction
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_check_balanced();

CREATE FUNCTION ledger_legs_beside_header() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    stray bigint;
BEGIN
    SELECT t.id INTO stray FROM new_legs l
    JOIN ledger_ledgertransaction t ON t.id = l.transaction_id
    WHERE t.xact <> pg_current_xact_id() LIMIT 1;
    IF stray IS NOT NULL THEN
        RAISE EXCEPTION 'legs may not be added to ledger transaction % after it was committed',
            stray USING ERRCODE = 'check_violation';
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
ALTER TABLE ledger_ledgertransaction DROP COLUMN IF EXISTS xact;
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]
    operations = [migrations.RunSQL(FORWARD, REVERSE)]
