"""Benchmark of the money core: set-based sweep and distribution against a per-row ORM loop.

Seeds N pending accumulations over C clients (default 1,000,000 over 10,000) in a dedicated
database, then prints wall times and peak memory of:
  - the sweep (one statement moving every pending row into a batch),
  - the distribution of that batch (one statement splitting the USDT),
  - the same two operations written as a plain per-row ORM loop on 10,000 rows, scaled.

Run: `make bench` (or `python bench/bench_money_core.py --rows 200000`).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _setup_database() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backoffice.settings")
    os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key-benchmark-only-secret-key-0000")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    if os.environ.get("DATABASE_URL"):
        return
    from backoffice.embedded_db import ensure_running

    os.environ["DATABASE_URL"] = ensure_running(name="backoffice_bench").url()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def provider_read_seconds(count: int) -> float:
    """Seconds per ChangeNOW exchange read as reconcile does it, against the sandbox."""
    from backoffice.reconcile import ExchangeReads
    from integrations.changenow.client import ChangeNowClient
    from integrations.sandbox import SandboxConfig, SandboxServer

    server = SandboxServer(SandboxConfig(seed=1)).start()
    try:
        client = ChangeNowClient(server.url, "bench")
        ids = [
            client.create_exchange(
                from_currency="eth",
                to_currency="usdt",
                from_network="eth",
                to_network="eth",
                from_amount=Decimal("0.1"),
                address="0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
            ).id
            for _ in range(count)
        ]
        reads = ExchangeReads(client)
        t = time.perf_counter()
        for exchange_id in ids:
            reads.get_exchange(exchange_id)
        return (time.perf_counter() - t) / count
    finally:
        server.stop()


class PlainBaseline:
    """What the database itself needs for each bulk move: the same statement shape on a copy
    of the accumulations (same columns and rows, a primary key only), in the same run."""

    def __init__(self, connection: object) -> None:
        self.connection = connection

    def _timed(self, sql: str, params: dict[str, object] | None = None) -> float:
        """The statement's RETURNING rows are summed in the database, as the real moves do:
        fetching a million rows into Python would time the driver, not the server."""
        from django.db import transaction

        t = time.perf_counter()
        with transaction.atomic(), self.connection.cursor() as cur:  # type: ignore[attr-defined]
            # The statements are this class's own constants.
            cur.execute(f"WITH moved AS ({sql}) SELECT count(*) FROM moved", params or {})  # noqa: S608
            cur.fetchone()
        return time.perf_counter() - t

    def copy(self) -> None:
        with self.connection.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute("DROP TABLE IF EXISTS bench_plain")
            cur.execute("CREATE TABLE bench_plain AS SELECT * FROM payouts_accumulation")
            cur.execute("ALTER TABLE bench_plain ADD PRIMARY KEY (id)")
            cur.execute("VACUUM ANALYZE bench_plain")

    def sweep(self) -> float:
        return self._timed(
            "UPDATE bench_plain SET state = 'converting', batch_id = gen_random_uuid(), "
            "state_changed_at = now() WHERE state = 'pending' RETURNING eth, usd"
        )

    def distribute(self, *, amount_micro: int) -> float:
        with self.connection.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute("SELECT sum(eth) FROM bench_plain WHERE state = 'converting'")
            (total,) = cur.fetchone()
        return self._timed(
            """
            UPDATE bench_plain AS a
            SET usdt = div(%(amount)s::numeric * (a.eth * 1000000000000000000)
                           * ((100 - a.fee_percent) * 10000),
                           %(total)s::numeric * 1000000000000000000 * 1000000) * 0.000001,
                state = 'converted', state_changed_at = now()
            WHERE a.state = 'converting'
            RETURNING a.client_id, a.eth, a.usdt
            """,
            {"amount": amount_micro, "total": total},
        )

    def reserve_payouts(self) -> float:
        return self._timed(
            "UPDATE bench_plain SET state = 'paying', payout_id = gen_random_uuid(), "
            "state_changed_at = now() WHERE state = 'converted' RETURNING usdt"
        )

    def drop(self) -> None:
        with self.connection.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute("DROP TABLE IF EXISTS bench_plain")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--clients", type=int, default=10_000)
    parser.add_argument("--loop-rows", type=int, default=10_000)
    parser.add_argument(
        "--provider-reads", type=int, default=1000, help="exchange reads to time (0: none)"
    )
    parser.add_argument(
        "--no-compare-postings",
        dest="compare_postings",
        action="store_false",
        help="skip the second seed that times the distribution without its ledger posting",
    )
    args = parser.parse_args()

    _setup_database()
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.utils import timezone

    from backoffice.reconcile import reconcile_breaches
    from backoffice.services import demo_seed
    from batches import services as batches_services
    from batches.models import ConversionBatch
    from batches.services import batch_distribute, batch_sweep, split_exact
    from payouts.models import Accumulation, Transfer
    from payouts.postings import transfer_post_final
    from payouts.services import runtime_settings_get
    from payouts.transitions import Actor, transition

    call_command("migrate", verbosity=0)
    actor = Actor.system("bench")

    def reset() -> None:
        with connection.cursor() as cur:
            cur.execute(
                "TRUNCATE payouts_accumulation, payouts_payout, batches_conversionbatch, "
                "payouts_client, payouts_transfer, ledger_ledgertransaction, ledger_leg "
                "RESTART IDENTITY CASCADE"
            )
        runtime_settings_get()

    def to_converting(batch_id: object) -> None:
        transition(
            model=ConversionBatch,
            pk=batch_id,
            to_state="exchange_created",
            actor=actor,
            updates={"exchange_id": "bench", "payin_address": "0xbench"},
        )
        for state in ("funds_sent", "converting"):
            transition(model=ConversionBatch, pk=batch_id, to_state=state, actor=actor)
        # Its deposit, final on chain and booked, as the engine leaves it.
        batch = ConversionBatch.objects.get(pk=batch_id)
        tx_hash = "0x" + uuid.uuid4().hex * 2
        transfer = Transfer.objects.create(
            batch=batch,
            asset="eth",
            amount=batch.eth_total,
            to_address="0xbench",
            from_address="0xbenchhost",
            chain_id=1,
            nonce=Transfer.objects.count(),
            state="mined",
            raw_tx="0x00",
            tx_hash=tx_hash,
            mined_hash=tx_hash,
            gas_fee_wei=21_000 * 10**9,
            final_at=timezone.now(),
        )
        transfer_post_final(transfer=transfer, actor=actor)

    print(f"rows={args.rows:,} clients={args.clients:,} loop_rows={args.loop_rows:,}")
    reset()
    t = time.perf_counter()
    demo_seed(clients=args.clients, accumulations=args.rows)
    seed_s = time.perf_counter() - t
    with connection.cursor() as cur:
        cur.execute("VACUUM ANALYZE payouts_accumulation")
    print(f"seed:          {seed_s:8.2f} s")

    plain = PlainBaseline(connection)
    plain.copy()  # the same rows, same width, a primary key only
    plain_sweep_s = plain.sweep()

    rss0 = peak_rss_mb()
    t = time.perf_counter()
    result = batch_sweep(actor=actor)
    sweep_s = time.perf_counter() - t
    assert result.created and result.rows == args.rows, result
    print(
        f"sweep:         {sweep_s:8.2f} s  ({result.rows:,} rows, {result.eth} ETH); plain "
        f"UPDATE ... RETURNING {plain_sweep_s:.2f} s -> {sweep_s / plain_sweep_s:.2f}x "
        "(target <= 2.5x)"
    )

    to_converting(result.batch_id)
    amount = (result.usd * Decimal("0.985")).quantize(Decimal("0.0000001"))
    t = time.perf_counter()
    dist = batch_distribute(batch_id=result.batch_id, amount_to=amount, actor=actor)
    dist_s = time.perf_counter() - t
    assert dist.rows == args.rows and dist.clients_usdt + dist.platform_usdt == dist.usdt_received
    with connection.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM ledger_leg l JOIN ledger_ledgertransaction t "
            "ON t.id = l.transaction_id WHERE t.batch_id = %s",
            [result.batch_id],
        )
        (legs,) = cur.fetchone()
    plain_dist_s = plain.distribute(amount_micro=int(dist.usdt_received.scaleb(6)))
    print(
        f"distribution:  {dist_s:8.2f} s  ({dist.usdt_received} USDT; its ledger posting: "
        f"{legs:,} legs, commit and balance check included); plain UPDATE ... FROM computing "
        f"the shares {plain_dist_s:.2f} s -> {dist_s / plain_dist_s:.2f}x (target <= 2.5x)"
    )
    from payouts.limits import PairRange
    from payouts.payout_sweep import payout_sweep

    plain_pay_s = plain.reserve_payouts()
    t = time.perf_counter()
    swept = payout_sweep(actor=actor, range_for=lambda _c, _n: PairRange(Decimal(0), None))
    pay_s = time.perf_counter() - t
    paying = sum(p["rows"] for p in swept.payouts)
    print(
        f"payout reservation: {pay_s:6.2f} s  ({swept.created:,} payouts, {paying:,} rows, one "
        f"statement for all clients paid whole, reasons kept for all); plain UPDATE ... "
        f"RETURNING of the converted rows {plain_pay_s:.2f} s -> {pay_s / plain_pay_s:.2f}x "
        "(target <= 2.5x)"
    )
    plain.drop()
    print(f"peak RSS:      {peak_rss_mb():8.1f} MB (before the set-based steps: {rss0:.1f} MB)")
    t = time.perf_counter()
    breaches = reconcile_breaches()
    reconcile_s = time.perf_counter() - t
    print(
        f"reconcile (database checks, ledger included): {reconcile_s:6.2f} s "
        f"on {args.rows:,} accumulations, {breaches and len(breaches) or 'no'} breaches"
    )
    assert not breaches, breaches[:3]

    if args.provider_reads:
        per_read = provider_read_seconds(args.provider_reads)
        print(
            f"reconcile, provider half: {per_read * 1000:.2f} ms per exchange read (sandbox over "
            f"HTTP, {args.provider_reads:,} reads) -> 10,000 open or recent orders "
            f"~{per_read * 10_000:.1f} s; with the database checks ~"
            f"{reconcile_s + per_read * 10_000:.1f} s (target < 60 s)"
        )

    if args.compare_postings:
        # The same sweep and distribution with the batch's posting left out: what the
        # ledger costs the distribution.
        reset()
        demo_seed(clients=args.clients, accumulations=args.rows)
        with connection.cursor() as cur:
            cur.execute("VACUUM ANALYZE payouts_accumulation")
        bare = batch_sweep(actor=actor)
        to_converting(bare.batch_id)
        posting = batches_services.batch_post_completed
        batches_services.batch_post_completed = lambda **_: 0
        try:
            t = time.perf_counter()
            batch_distribute(batch_id=bare.batch_id, amount_to=amount, actor=actor)
            bare_s = time.perf_counter() - t
        finally:
            batches_services.batch_post_completed = posting
        print(
            f"distribution without its posting: {bare_s:6.2f} s -> with the ledger "
            f"{dist_s / bare_s:.2f}x (target <= 1.2x)"
        )

    # The same operations as a naive per-row ORM loop, on fewer rows, scaled up.
    reset()
    demo_seed(clients=min(args.clients, args.loop_rows), accumulations=args.loop_rows)
    t = time.perf_counter()
    with transaction.atomic():
        rows = list(Accumulation.objects.select_for_update().filter(state="pending"))
        batch = ConversionBatch.objects.create(
            row_count=len(rows),
            eth_total=sum(r.eth for r in rows),
            usd_total=sum(r.usd for r in rows),
            threshold_usd=Decimal(20),
            trigger="threshold",
        )
        for row in rows:
            row.state, row.batch = "converting", batch
            row.save(update_fields=["state", "batch"])
    loop_sweep_s = time.perf_counter() - t
    to_converting(batch.pk)
    t = time.perf_counter()
    with transaction.atomic():
        rows = list(Accumulation.objects.select_for_update().filter(batch=batch))
        micro = split_exact(
            amount_micro=int(amount * 10**6) // 100,
            rows=[(int(r.eth * 10**18), r.fee_percent) for r in rows],
        )
        for row, share in zip(rows, micro, strict=True):
            row.usdt, row.state = Decimal(share).scaleb(-6), "converted"
            row.save(update_fields=["usdt", "state"])
    loop_dist_s = time.perf_counter() - t
    scale = args.rows / args.loop_rows
    print(
        f"per-row loop:  sweep {loop_sweep_s:.2f} s, distribution {loop_dist_s:.2f} s on "
        f"{args.loop_rows:,} rows -> scaled to {args.rows:,}: "
        f"{loop_sweep_s * scale:.1f} s and {loop_dist_s * scale:.1f} s"
    )
    print(
        f"speed-up per row: sweep {loop_sweep_s * scale / sweep_s:.0f}x, "
        f"distribution {loop_dist_s * scale / dist_s:.0f}x"
    )
    reset()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
