"""Benchmark of the back office: server time and query count of every admin page on a big
database.

Loads, in a dedicated database, 1,000,000 accumulations over 10,000 clients (the seed
command's set-based insert) and then, in a few set-based statements, 10,000 conversion
batches in realistic states (most completed and their rows paid through 10,000 payouts, some
converting, needing attention, stuck), one exchange attempt and one transfer per batch,
audit events and 1,000,000 webhook events. Then it renders each page through Django's
request handler (the test client: the full middleware, session, auth and template stack,
no network) and prints the median server time and the number of SQL queries.

Targets (issue 5): every list page and the dashboard <= 300 ms and <= 12 queries.

Run: `make bench-admin` (or `python bench/bench_admin.py --rows 200000 --batches 2000`);
`--reuse` skips loading when the database already holds the data.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_MS = 300.0
TARGET_QUERIES = 12
DATABASE = "backoffice_bench_admin"


def _setup_database() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backoffice.settings")
    os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key-benchmark-only-secret-key-0000")
    # The test client talks plain HTTP to "testserver".
    os.environ["SECURE_SSL_REDIRECT"] = "false"
    # The benchmark signs an approver in without a device: it measures pages, not sign-in.
    os.environ["OTP_REQUIRED"] = "false"
    os.environ["ALLOWED_HOSTS"] = "testserver,localhost"
    if os.environ.get("DATABASE_URL"):
        return
    from backoffice.embedded_db import ensure_running

    os.environ["DATABASE_URL"] = ensure_running(name=DATABASE).url()


# Rows are cut into batches by id; batch k (0-based, in creation order) takes rows
# (k * per_batch, (k + 1) * per_batch]. The last rows stay pending. Batch states by k:
# the newest few are open (reserved, funds_sent, needing attention, converting); older ones
# completed; rows of the oldest 90 % of completed batches are paid, the rest converted.
_LOAD_BATCHES_SQL = """
CREATE TEMP TABLE bench_batch AS
SELECT k,
       gen_random_uuid() AS id,
       CASE WHEN k >= %(n)s - 5 THEN 'reserved'
            WHEN k >= %(n)s - 10 THEN 'funds_sent'
            WHEN k >= %(n)s - 20 THEN 'needs_attention'
            WHEN k >= %(n)s - 50 THEN 'converting'
            ELSE 'completed' END AS state
FROM generate_series(0, %(n)s - 1) AS k;

CREATE TEMP TABLE bench_row AS
SELECT a.id, (row_number() OVER (ORDER BY a.id) - 1) AS r, a.client_id, a.usd
FROM payouts_accumulation a;
CREATE INDEX ON bench_row (id);

-- Spread the payments over the last 30 days in id order (the seed puts them all in 2 h).
UPDATE payouts_accumulation a
SET created_at = now() - interval '30 days' + (b.r::float / %(rows)s) * interval '30 days',
    state_changed_at = now() - interval '30 days'
                       + (b.r::float / %(rows)s) * interval '30 days'
FROM bench_row b WHERE b.id = a.id;

INSERT INTO batches_conversionbatch (
    id, state, row_count, exchange_id, payin_address, payin_extra_id, provider_status,
    last_error, last_error_code, retry_count, next_attempt_at, created_at, state_changed_at,
    completed_at, eth_total, usd_total, threshold_usd, trigger, usdt_received_raw,
    usdt_received, exchange_dust, platform_usdt
)
SELECT bb.id, bb.state, s.n,
       CASE WHEN bb.state = 'reserved' THEN '' ELSE 'cnx' || lpad(bb.k::text, 10, '0') END,
       CASE WHEN bb.state = 'reserved' THEN '' ELSE %(payin)s END, '',
       CASE bb.state WHEN 'completed' THEN 'finished' WHEN 'converting' THEN 'exchanging'
                     WHEN 'needs_attention' THEN 'refunded' ELSE '' END,
       CASE WHEN bb.state = 'needs_attention' THEN 'exchange refunded after deposit' ELSE '' END,
       '', 0, NULL, s.last + interval '5 minutes',
       CASE WHEN bb.state = 'completed' THEN s.last + interval '40 minutes'
            ELSE s.last + interval '5 minutes' END,
       CASE WHEN bb.state = 'completed' THEN s.last + interval '40 minutes' END,
       s.eth, s.usd, 20, 'threshold',
       CASE WHEN bb.state = 'completed' THEN s.usdt + s.platform END,
       CASE WHEN bb.state = 'completed' THEN s.usdt + s.platform END,
       CASE WHEN bb.state = 'completed' THEN 0 END,
       CASE WHEN bb.state = 'completed' THEN s.platform END
FROM bench_batch bb JOIN (
    SELECT b.r / %(per_batch)s AS k, count(*) AS n, sum(a.eth) AS eth, sum(a.usd) AS usd,
           sum(round(a.usd * 0.97, 6)) AS usdt, round(sum(a.usd) * 0.03, 6) AS platform,
           max(a.created_at) AS last
    FROM bench_row b JOIN payouts_accumulation a ON a.id = b.id
    WHERE b.r < %(n)s * %(per_batch)s
    GROUP BY 1
) s ON s.k = bb.k;

-- One payout per client for the paid rows (oldest 90 %% of the completed batches).
CREATE TEMP TABLE bench_payout AS
SELECT client_id, gen_random_uuid() AS id, count(*) AS n, sum(round(usd * 0.97, 6)) AS usdt
FROM bench_row WHERE r < (%(n)s - 50) * 9 / 10 * %(per_batch)s GROUP BY client_id;

INSERT INTO payouts_payout (
    id, state, row_count, exchange_id, payin_address, payin_extra_id, provider_status,
    last_error, last_error_code, retry_count, next_attempt_at, created_at, state_changed_at,
    completed_at, client_id, usdt_amount, currency, network, address, extra_id, amount_to
)
SELECT p.id, 'completed', p.n, '', '', '', '', '', '', 0, NULL,
       now() - interval '3 days', now() - interval '3 days', now() - interval '3 days',
       p.client_id, p.usdt, 'usdt', 'eth', %(payin)s, '', p.usdt
FROM bench_payout p;

UPDATE payouts_accumulation a
SET batch_id = bb.id,
    payout_id = CASE WHEN b.r < (%(n)s - 50) * 9 / 10 * %(per_batch)s THEN p.id END,
    usdt = CASE WHEN bb.state = 'completed' THEN round(b.usd * 0.97, 6) END,
    state = CASE WHEN bb.state <> 'completed' THEN 'converting'
                 WHEN b.r < (%(n)s - 50) * 9 / 10 * %(per_batch)s THEN 'paid'
                 ELSE 'converted' END
FROM bench_row b
JOIN bench_batch bb ON bb.k = b.r / %(per_batch)s
LEFT JOIN bench_payout p ON p.client_id = b.client_id
WHERE b.id = a.id AND b.r < %(n)s * %(per_batch)s;

INSERT INTO payouts_exchangeattempt (
    batch_id, payout_id, exchange_id, status, from_currency, from_network, to_currency,
    to_network, amount_from, expected_amount_to, amount_to, payin_address, payin_extra_id,
    payout_address, payout_extra_id, payin_hash, payout_hash, valid_until, error,
    status_history, created_at, updated_at
)
SELECT b.id, NULL, b.exchange_id, coalesce(nullif(b.provider_status, ''), 'waiting'), 'eth',
       'eth', 'usdt', 'eth', b.eth_total, b.usd_total * 0.99, b.usdt_received, b.payin_address,
       '', %(payin)s, '', '', '', NULL, '',
       jsonb_build_array(
           jsonb_build_object('status', 'waiting', 'at', b.created_at),
           jsonb_build_object('status', 'confirming', 'at', b.created_at + interval '2 min'),
           jsonb_build_object('status', 'exchanging', 'at', b.created_at + interval '9 min')),
       b.created_at, b.state_changed_at
FROM batches_conversionbatch b WHERE b.exchange_id <> '';

INSERT INTO payouts_transfer (
    batch_id, payout_id, attempt, asset, amount, to_address, from_address, chain_id, nonce,
    state, raw_tx, tx_hash, broadcast_count, block_number, created_at, signed_at,
    broadcast_at, mined_at, note
)
SELECT b.id, NULL, 1, 'eth', b.eth_total, b.payin_address, %(host)s, 1,
       row_number() OVER (ORDER BY b.created_at),
       CASE WHEN b.state = 'funds_sent' THEN 'broadcast' ELSE 'mined' END,
       '0x02f8', '0x' || md5(b.id::text) || md5(b.exchange_id), 1, 19000000,
       b.created_at, b.created_at, b.created_at,
       CASE WHEN b.state = 'funds_sent' THEN NULL ELSE b.created_at + interval '1 min' END, ''
FROM batches_conversionbatch b
WHERE b.state IN ('funds_sent', 'converting', 'needs_attention', 'completed');

INSERT INTO payouts_auditevent (
    object_type, object_id, kind, from_state, to_state, actor, user_id, reason, data, created_at
)
SELECT 'conversionbatch', b.id::text, 'transition', m.f, m.t, 'system:bench', NULL, '',
       '{}'::jsonb, b.created_at + m.o * interval '1 min'
FROM batches_conversionbatch b
CROSS JOIN (VALUES ('', 'reserved', 0), ('reserved', 'exchange_created', 1),
                   ('exchange_created', 'funds_sent', 2), ('funds_sent', 'converting', 3),
                   ('converting', 'completed', 40)) AS m(f, t, o)
WHERE b.state = 'completed' OR m.o = 0;

INSERT INTO backoffice_webhookevent (
    provider, event_id, received_at, signature_valid, outcome, reason, body, headers,
    request_id, payment_id, reference, accumulation_id, resolved_at, resolved_by_id
)
SELECT 'nowpayments', a.payment_id || ':finished', a.created_at, true,
       CASE WHEN a.id %% 5000 = 0 THEN 'unmatched' ELSE 'applied' END,
       '', convert_to('{"payment_id": "' || a.payment_id || '", "payment_status": "finished"}',
                      'UTF8'), '{}',
       '', a.payment_id, 'seed:' || a.id,
       CASE WHEN a.id %% 5000 = 0 THEN NULL ELSE a.id END, NULL, NULL
FROM payouts_accumulation a;
"""


def load(*, rows: int, clients: int, batches: int) -> None:
    from django.core.management import call_command
    from django.db import connection, transaction

    from backoffice.schedules import schedules_setup
    from backoffice.services import demo_seed, roles_setup
    from payouts.services import runtime_settings_get

    call_command("migrate", verbosity=0)
    with connection.cursor() as cur:
        cur.execute(
            "TRUNCATE payouts_accumulation, payouts_payout, batches_conversionbatch, "
            "payouts_client, payouts_exchangeattempt, payouts_transfer, "
            "backoffice_webhookevent RESTART IDENTITY CASCADE"
        )
        # Append-only: the trigger refuses DELETE, not TRUNCATE.
        cur.execute("TRUNCATE payouts_auditevent RESTART IDENTITY")
    runtime_settings_get()
    roles_setup()
    schedules_setup()
    t = time.perf_counter()
    demo_seed(clients=clients, accumulations=rows)
    print(f"seed {rows:,} accumulations / {clients:,} clients: {time.perf_counter() - t:.1f} s")
    per_batch = max(1, int(rows * 0.95) // batches)
    t = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute(
            _LOAD_BATCHES_SQL,
            {
                "n": batches,
                "rows": rows,
                "per_batch": per_batch,
                "payin": "0x52908400098527886E0F7030069857D2E4169EE7",
                "host": "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            },
        )
    print(
        f"batches, payouts, attempts, transfers, audit, webhooks: {time.perf_counter() - t:.1f} s"
    )
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE")
    with connection.cursor() as cur:
        cur.execute(
            "SELECT (SELECT count(*) FROM payouts_accumulation), "
            "(SELECT count(*) FROM batches_conversionbatch), "
            "(SELECT count(*) FROM payouts_payout), (SELECT count(*) FROM payouts_auditevent), "
            "(SELECT count(*) FROM backoffice_webhookevent)"
        )
        acc, bat, pay, aud, web = cur.fetchone()
    print(
        f"loaded: {acc:,} accumulations, {bat:,} batches, {pay:,} payouts, {aud:,} audit "
        f"events, {web:,} webhook events"
    )


def loaded(rows: int, batches: int) -> bool:
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT to_regclass('payouts_accumulation') IS NOT NULL")
        if not cur.fetchone()[0]:
            return False
        cur.execute(
            "SELECT (SELECT count(*) FROM payouts_accumulation), "
            "(SELECT count(*) FROM batches_conversionbatch)"
        )
        return tuple(cur.fetchone()) == (rows, batches)


def pages() -> list[tuple[str, str]]:
    """(label, URL) of every page measured, with real ids from the loaded data."""
    from django.urls import reverse
    from django.utils import timezone

    from backoffice.dashboard import days_query
    from batches.models import ConversionBatch
    from payouts.models import Accumulation, Client, Payout, Transfer

    batch = ConversionBatch.objects.filter(state="completed").order_by("-created_at").first()
    open_batch = ConversionBatch.objects.filter(state="needs_attention").first()
    payout = Payout.objects.order_by("-created_at").first()
    client = Client.objects.order_by("reference").first()
    acc = Accumulation.objects.order_by("-id").first()
    transfer = Transfer.objects.order_by("-id").first()
    assert batch and open_batch and payout and client and acc and transfer
    today = timezone.now().date()
    week_ago, tomorrow = today - timedelta(days=7), today
    ch = "admin:{}_{}_changelist".format
    return [
        ("dashboard", reverse("admin:index")),
        ("accumulations", reverse(ch("payouts", "accumulation"))),
        ("accumulations state=paid", reverse(ch("payouts", "accumulation")) + "?state__exact=paid"),
        (
            "accumulations client",
            reverse(ch("payouts", "accumulation")) + f"?client={client.reference}",
        ),
        (
            "accumulations search payment id",
            reverse(ch("payouts", "accumulation")) + f"?q={acc.payment_id}",
        ),
        (
            "accumulations search tx hash",
            reverse(ch("payouts", "accumulation")) + f"?q={transfer.tx_hash}",
        ),
        (
            "accumulations past 7 days",
            reverse(ch("payouts", "accumulation")) + "?" + days_query(week_ago, tomorrow),
        ),
        ("batches", reverse(ch("batches", "conversionbatch"))),
        ("batches stuck", reverse(ch("batches", "conversionbatch")) + "?stuck=yes"),
        ("payouts", reverse(ch("payouts", "payout"))),
        ("clients", reverse(ch("payouts", "client"))),
        ("webhook events", reverse(ch("backoffice", "webhookevent"))),
        (
            "webhook events unmatched",
            reverse(ch("backoffice", "webhookevent")) + "?outcome__exact=unmatched",
        ),
        ("audit events", reverse(ch("payouts", "auditevent"))),
        ("exchange attempts", reverse(ch("payouts", "exchangeattempt"))),
        ("transfers", reverse(ch("payouts", "transfer"))),
        (
            "batch page (completed)",
            reverse("admin:batches_conversionbatch_change", args=[batch.pk]),
        ),
        (
            "batch page (needs attention)",
            reverse("admin:batches_conversionbatch_change", args=[open_batch.pk]),
        ),
        ("payout page", reverse("admin:payouts_payout_change", args=[payout.pk])),
        ("client page", reverse("admin:payouts_client_change", args=[client.pk])),
        ("accumulation page", reverse("admin:payouts_accumulation_change", args=[acc.pk])),
        ("run-time settings", reverse("admin:payouts_runtimesettings_change", args=[1])),
    ]


def measure(repeat: int) -> list[tuple[str, float, int, int]]:
    from django.contrib.auth.models import User
    from django.db import connection
    from django.test import Client as HttpClient
    from django.test.utils import CaptureQueriesContext

    user, _ = User.objects.get_or_create(
        username="bench-approver", defaults={"is_staff": True, "email": "bench@example.com"}
    )
    from django.contrib.auth.models import Group

    user.groups.add(Group.objects.get(name="finance_approver"))
    http = HttpClient()
    http.force_login(user)
    results = []
    for label, url in pages():
        http.get(url)  # warm: template compilation, first-use caches
        times = []
        queries = 0
        status = 0
        for _ in range(repeat):
            with CaptureQueriesContext(connection) as ctx:
                t = time.perf_counter()
                response = http.get(url)
                times.append((time.perf_counter() - t) * 1000)
            queries, status = len(ctx.captured_queries), response.status_code
        results.append((label, statistics.median(times), queries, status))
    return results


def measure_export() -> tuple[float, int, float]:
    """Stream the CSV export of every accumulation; returns seconds, rows, peak RSS MB."""
    from django.contrib.auth.models import User
    from django.test import Client as HttpClient
    from django.urls import reverse

    http = HttpClient()
    http.force_login(User.objects.get(username="bench-approver"))
    t = time.perf_counter()
    response = http.get(reverse("admin:payouts_accumulation_export"))
    lines = 0
    for chunk in response.streaming_content:
        lines += chunk.count(b"\n")
    seconds = time.perf_counter() - t
    return seconds, lines - 1, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--batches", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="keep already loaded data")
    parser.add_argument("--no-export", action="store_true", help="skip the 1M-row CSV export")
    parser.add_argument("--no-reconcile", action="store_true", help="skip timing reconcile")
    args = parser.parse_args()

    _setup_database()
    import django

    django.setup()
    if not (args.reuse and loaded(args.rows, args.batches)):
        load(rows=args.rows, clients=args.clients, batches=args.batches)
    results = measure(args.repeat)
    print(f"\n{'page':34} {'ms (median)':>12} {'queries':>8}  status")
    failed = False
    for label, ms, queries, status in results:
        ok = ms <= TARGET_MS and queries <= TARGET_QUERIES and status == 200
        failed |= not ok
        mark = "" if ok else "  <-- over target"
        print(f"{label:34} {ms:12.1f} {queries:8d}  {status}{mark}")
    print(f"targets: <= {TARGET_MS:.0f} ms and <= {TARGET_QUERIES} queries per page")
    if not args.no_reconcile:
        from backoffice.reconcile import reconcile_breaches

        t = time.perf_counter()
        breaches = reconcile_breaches()
        print(
            f"reconcile, database checks (ledger included): {time.perf_counter() - t:.2f} s on "
            f"{args.rows:,} accumulations ({len(breaches)} breaches: the loaded data is not "
            "booked like the engine's, so only the time counts)"
        )
    if not args.no_export:
        seconds, lines, rss = measure_export()
        print(f"CSV export of {lines:,} accumulations: {seconds:.1f} s, peak RSS {rss:.0f} MB")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
