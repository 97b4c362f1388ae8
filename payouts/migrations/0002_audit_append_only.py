from django.db import migrations

# The audit trail is evidence: the database itself refuses to rewrite or delete it.
FORWARD = """
CREATE OR REPLACE FUNCTION payouts_auditevent_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER payouts_auditevent_no_update_delete
    BEFORE UPDATE OR DELETE ON payouts_auditevent
    FOR EACH ROW EXECUTE FUNCTION payouts_auditevent_append_only();
"""
REVERSE = """
DROP TRIGGER IF EXISTS payouts_auditevent_no_update_delete ON payouts_auditevent;
DROP FUNCTION IF EXISTS payouts_auditevent_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("payouts", "0001_initial")]
    operations = [migrations.RunSQL(FORWARD, REVERSE)]
