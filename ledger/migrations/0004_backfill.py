from django.db import migrations

# Books what happened before the ledger existed, with the postings the code makes today
# (payouts.postings): intake, final transfers and their gas, completed batches and payouts,
# proved refunds and write-offs. Set-based: a staging table of lines, then one INSERT for
# the accounts, one for the transactions and one for the legs.
FORWARD = r"""
SELECT set_config('ledger.backfill', 'on', true);

CREATE TEMP TABLE ledger_backfill (
    kind text, memo text, tx_hash text, accumulation_id bigint, batch_id uuid, payout_id uuid,
    transfer_id bigint, name text, asset text, amount numeric
) ON COMMIT DROP;

INSERT INTO ledger_backfill
SELECT 'intake', 'payment ' || a.payment_id, '', a.id, NULL, NULL, NULL, x.name, 'eth', x.amount
FROM payouts_accumulation a JOIN payouts_client c ON c.id = a.client_id
CROSS JOIN LATERAL (VALUES ('host_wallet', a.eth), ('clients:' || c.reference, -a.eth))
    AS x(name, amount);

INSERT INTO ledger_backfill
SELECT 'transfer', t.state || ' transfer ' || coalesce(nullif(t.mined_hash, ''), t.tx_hash),
       coalesce(nullif(t.mined_hash, ''), t.tx_hash), NULL, NULL, NULL, t.id, x.name, x.asset,
       x.amount
FROM payouts_transfer t
CROSS JOIN LATERAL (VALUES
    ('in_transit:' || coalesce(t.batch_id, t.payout_id)::text, lower(t.asset),
     CASE WHEN t.state = 'mined' THEN t.amount ELSE 0 END),
    ('host_wallet', lower(t.asset), CASE WHEN t.state = 'mined' THEN -t.amount ELSE 0 END),
    ('network_fees', 'eth', coalesce(t.gas_fee_wei, 0) * 0.000000000000000001),
    ('host_wallet', 'eth', -coalesce(t.gas_fee_wei, 0) * 0.000000000000000001)
) AS x(name, asset, amount)
WHERE t.final_at IS NOT NULL AND t.state IN ('mined', 'reverted', 'cancelled');

INSERT INTO ledger_backfill
SELECT 'batch_completed', 'batch ' || b.id, '', NULL, b.id, NULL, NULL, x.name, x.asset, x.amount
FROM batches_conversionbatch b
CROSS JOIN LATERAL (VALUES
    ('in_transit:' || b.id::text, 'eth', -b.eth_total),
    ('host_wallet', 'usdt', b.usdt_received),
    ('platform_fees', 'usdt', -b.platform_usdt)
) AS x(name, asset, amount)
WHERE b.state = 'completed';

INSERT INTO ledger_backfill
SELECT 'batch_completed', 'batch ' || s.batch_id, '', NULL, s.batch_id, NULL, NULL,
       'clients:' || c.reference, x.asset, x.amount
FROM (
    SELECT a.batch_id, a.client_id, sum(a.eth) AS eth, sum(a.usdt) AS usdt
    FROM payouts_accumulation a JOIN batches_conversionbatch b ON b.id = a.batch_id
    WHERE b.state = 'completed' GROUP BY a.batch_id, a.client_id
) s JOIN payouts_client c ON c.id = s.client_id
CROSS JOIN LATERAL (VALUES ('eth', s.eth), ('usdt', -s.usdt)) AS x(asset, amount);

INSERT INTO ledger_backfill
SELECT 'payout_completed', 'payout ' || p.id, '', NULL, NULL, p.id, NULL, x.name, 'usdt', x.amount
FROM payouts_payout p JOIN payouts_client c ON c.id = p.client_id
CROSS JOIN LATERAL (VALUES
    ('clients:' || c.reference, p.usdt_amount), ('in_transit:' || p.id::text, -p.usdt_amount)
) AS x(name, amount)
WHERE p.state = 'completed';

INSERT INTO ledger_backfill
SELECT 'refund', 'refund ' || o.refund_tx_hash, o.refund_tx_hash, NULL, o.batch_id, o.payout_id,
       NULL, x.name, o.loss_asset, x.amount
FROM (
    SELECT id AS batch_id, NULL::uuid AS payout_id, id, refund_tx_hash, loss_asset,
           refund_received, loss_amount
    FROM batches_conversionbatch WHERE refund_tx_hash <> ''
    UNION ALL
    SELECT NULL, id, id, refund_tx_hash, loss_asset, refund_received, loss_amount
    FROM payouts_payout WHERE refund_tx_hash <> ''
) o
CROSS JOIN LATERAL (VALUES
    ('host_wallet', o.refund_received),
    ('in_transit:' || o.id::text, -o.refund_received - coalesce(o.loss_amount, 0)),
    ('losses', coalesce(o.loss_amount, 0))
) AS x(name, amount);

INSERT INTO ledger_backfill
SELECT 'write_off', 'write-off', '', NULL, w.batch_id, w.payout_id, NULL, x.name, w.asset, x.amount
FROM (
    SELECT a.batch_id, NULL::uuid AS payout_id, a.batch_id AS id, 'eth' AS asset,
           'clients:' || c.reference AS client, sum(a.eth) AS amount
    FROM payouts_accumulation a JOIN payouts_client c ON c.id = a.client_id
    WHERE a.state = 'written_off' AND a.payout_id IS NULL GROUP BY a.batch_id, c.reference
    UNION ALL
    SELECT NULL, a.payout_id, a.payout_id, 'usdt', 'clients:' || c.reference, sum(a.usdt)
    FROM payouts_accumulation a JOIN payouts_client c ON c.id = a.client_id
    WHERE a.state = 'written_off' AND a.payout_id IS NOT NULL GROUP BY a.payout_id, c.reference
) w
CROSS JOIN LATERAL (VALUES (w.client, w.amount), ('platform_fees', -w.amount)) AS x(name, amount);

-- What left for a written-off order is absorbed by the claim, not platform income.
INSERT INTO ledger_backfill
SELECT 'write_off', 'write-off', '', NULL, t.batch_id, t.payout_id, NULL, x.name, lower(t.asset),
       x.amount
FROM payouts_transfer t
JOIN (
    SELECT DISTINCT batch_id, payout_id FROM ledger_backfill WHERE kind = 'write_off'
) w ON w.batch_id IS NOT DISTINCT FROM t.batch_id AND w.payout_id IS NOT DISTINCT FROM t.payout_id
CROSS JOIN LATERAL (VALUES
    ('in_transit:' || coalesce(t.batch_id, t.payout_id)::text, -t.amount),
    ('platform_fees', t.amount)
) AS x(name, amount)
WHERE t.state = 'mined';

INSERT INTO ledger_account (name, asset, kind)
SELECT DISTINCT name, asset, ledger_account_kind(name) FROM ledger_backfill
ON CONFLICT (name, asset) DO NOTHING;

CREATE TEMP TABLE ledger_backfill_lines ON COMMIT DROP AS
SELECT kind || ':' || coalesce(accumulation_id::text, transfer_id::text, batch_id::text,
                               payout_id::text) AS cause,
       kind, memo, tx_hash, accumulation_id, batch_id, payout_id, transfer_id, name, asset,
       sum(amount) AS amount
FROM ledger_backfill
GROUP BY kind, memo, tx_hash, accumulation_id, batch_id, payout_id, transfer_id, name, asset
HAVING sum(amount) <> 0;

WITH header AS (
    INSERT INTO ledger_ledgertransaction (kind, memo, actor, tx_hash, created_at,
                                          accumulation_id, batch_id, payout_id, transfer_id)
    SELECT DISTINCT kind, memo, 'system:backfill', tx_hash, now(), accumulation_id, batch_id,
           payout_id, transfer_id
    FROM ledger_backfill_lines
    RETURNING id, kind || ':' || coalesce(accumulation_id::text, transfer_id::text,
                                          batch_id::text, payout_id::text) AS cause
)
INSERT INTO ledger_leg (transaction_id, account_id, amount)
SELECT h.id, a.id, l.amount
FROM header h JOIN ledger_backfill_lines l ON l.cause = h.cause
JOIN ledger_account a ON a.name = l.name AND a.asset = l.asset;
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0003_intake_posting")]
    operations = [migrations.RunSQL(FORWARD, migrations.RunSQL.noop)]
