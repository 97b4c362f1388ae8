"""The whole pipeline under sustained load (issue 16): `make bench-pipeline`.

Starts a system of real processes on a fresh database (the e2e harness's stack): the sandbox
(ChangeNOW, the chain and the signer), gunicorn, two Q clusters and the pacer, which enqueues
the scheduled jobs (conversion sweep, engine advance, payout sweep) every few seconds instead
of Django-Q2's 30-second look at its schedules. Then `--senders` senders post signed
NOWPayments IPNs, every one a new payment of 5 to 20 USD for one of `--clients` merchants, at
`--rate` IPN/s for `--duration` seconds; before each second's IPNs, NOWPayments' payout of
that second's payments reaches the host wallet on chain (one sandbox payment per second).

While it runs, every few seconds it samples the oldest payment not yet paid, the broker's
queue depth, the database size and the rows per state. When the load stops it waits for the
pipeline to drain, then prints intake p50/p99 (from each IPN's scheduled send time, so a
server falling behind is charged for it), the conversion sweep, distribution and payout step
times, the longest wait of a payment beyond its client's threshold crossing, and checks that
every payment was credited once, converted once and paid once and that `reconcile` is clean.
Exit status 1 when a check fails.

Run: `make bench-pipeline` (10 minutes at 200 IPN/s), or
`make bench-pipeline BENCH_ARGS="--rate 50 --duration 60"`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backoffice.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only-secret-key-benchmark-only-secret-key-0000")
os.environ.setdefault("LOG_LEVEL", "WARNING")

from bench_intake import RunResult, http_post, paced, percentile, post, signed_ipn  # noqa: E402

ETH_PRICE_USD = Decimal("3000")  # the sandbox's quote
# The merchants are copies of the three demo ones: instant USDT on Ethereum (a direct ERC-20
# transfer), threshold BTC and threshold XMR (each a ChangeNOW exchange).
TEMPLATES = (("demo-instant-usdt", "0"), ("demo-threshold-btc", "50"), ("demo-threshold-xmr", "25"))


@dataclass
class Sample:
    at: float
    oldest_unpaid_s: float
    oldest_due_s: float
    queue: int
    db_mb: float
    states: dict[str, int] = field(default_factory=dict)


def add_clients(server: Any, template: str, count: int) -> list[str]:
    """`count` merchants in the template database, copied from the demo ones."""
    with server.connect(template) as conn:
        columns = [
            row[0]
            for row in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'payouts_client' AND column_name NOT IN "
                "('id', 'reference', 'name', 'payout_threshold_usd') ORDER BY ordinal_position"
            )
        ]
        listed = ", ".join(columns)
        references = []
        for index in range(count):
            source, threshold = TEMPLATES[index % len(TEMPLATES)]
            reference = f"bench-{index:04d}-{source.split('-')[-1]}"
            conn.execute(
                f"INSERT INTO payouts_client (reference, name, payout_threshold_usd, {listed}) "  # noqa: S608 - column names from the catalog
                f"SELECT %s, %s, %s, {listed} FROM payouts_client WHERE reference = %s",
                [reference, f"Bench merchant {index}", threshold, source],
            )
            references.append(reference)
    return references


def plan_payments(
    stack: Any, references: list[str], rate: float, duration: float, seed: int
) -> tuple[list[bytes], list[Decimal]]:
    """Every IPN of the run, signed before the clock starts (NOWPayments signs before it
    sends), and the ETH of each second's payments."""
    from tests.e2e.harness import IPN_SECRET

    rng = random.Random(seed)
    total = int(rate * duration)
    requests: list[bytes] = []
    per_second = [Decimal(0)] * (int(duration) + 1)
    base = 7_000_000_000 + (os.getpid() % 1000) * 1_000_000
    for index in range(total):
        usd = Decimal(rng.randint(500, 2000)).scaleb(-2)
        eth = (usd / ETH_PRICE_USD * Decimal("0.995")).quantize(Decimal("1e-8"), ROUND_DOWN)
        reference = references[rng.randrange(len(references))]
        payment_id = base + index
        order_id = f"{reference}:inv-{payment_id}"
        requests.append(signed_ipn(payment_id, usd, eth, order_id, secret=IPN_SECRET))
        per_second[int(index / rate)] += eth
    return requests, per_second


async def offer_load(
    web_port: int,
    sandbox_port: int,
    requests: list[bytes],
    per_second: list[Decimal],
    senders: int,
    rate: float,
) -> RunResult:
    """The senders offer `rate` IPN/s on a fixed schedule; each second's payments reach the
    host wallet half a second before that second's first IPN."""
    begin = time.perf_counter() + 1.0

    async def nowpayments_pays() -> None:
        for second, eth in enumerate(per_second):
            if eth <= 0:
                continue
            delay = begin + second - 0.5 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            body = json.dumps({"asset": "eth", "amount": str(eth)}).encode()
            status = await post(
                sandbox_port, http_post("/_sandbox/pay", body, "X-Bench", "pay"), timeout=30
            )
            if status != 200:
                raise RuntimeError(f"the sandbox refused a payment to the host wallet: {status}")

    return await paced(
        web_port, requests, senders, rate, begin=begin, alongside=(nowpayments_pays(),)
    )


# The oldest payment not yet paid, and the oldest one that is due: in flight, or converted
# for a client not waiting for its threshold.
_OLDEST_SQL = """
SELECT coalesce(extract(epoch FROM now() - min(a.created_at)), 0),
       coalesce(extract(epoch FROM now() - min(a.created_at) FILTER (
           WHERE a.state <> 'converted'
              OR c.unpaid_code NOT IN ('below_threshold', 'below_minimum'))), 0)
FROM payouts_accumulation a JOIN payouts_client c ON c.id = a.client_id
WHERE a.state NOT IN ('paid', 'written_off')
"""


class Sampler(threading.Thread):
    def __init__(self, stack: Any, interval: float, redis_url: str | None) -> None:
        super().__init__(daemon=True)
        self.stack, self.interval, self.redis_url = stack, interval, redis_url
        self.samples: list[Sample] = []
        self.stopping = threading.Event()
        self.started_at = time.monotonic()

    def queue_depth(self, conn: Any) -> int:
        if self.redis_url:
            import redis

            # Django-Q2's Redis broker keeps the cluster's queue in this list.
            return int(redis.Redis.from_url(self.redis_url).llen("django_q:backoffice:q"))
        return int(conn.execute("SELECT count(*) FROM django_q_ormq").fetchone()[0])

    def run(self) -> None:
        conn = self.stack.server.connect(self.stack.db_name)
        try:
            while not self.stopping.is_set():
                oldest, due = conn.execute(_OLDEST_SQL).fetchone()
                states = dict(
                    conn.execute(
                        "SELECT state, count(*) FROM payouts_accumulation GROUP BY state"
                    ).fetchall()
                )
                size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
                self.samples.append(
                    Sample(
                        at=time.monotonic() - self.started_at,
                        oldest_unpaid_s=float(oldest),
                        oldest_due_s=float(due),
                        queue=self.queue_depth(conn),
                        db_mb=size / 2**20,
                        states=states,
                    )
                )
                self.stopping.wait(self.interval)
        finally:
            conn.close()


# Rows a client keeps for its next payment: converted, below its threshold or below
# ChangeNOW's minimum for its pair (the payout sweep writes that reason on the client).
_KEPT_SQL = """
SELECT count(*), count(DISTINCT a.client_id) FROM payouts_accumulation a
JOIN payouts_client c ON c.id = a.client_id
WHERE a.state = 'converted' AND c.unpaid_code IN ('below_threshold', 'below_minimum')
"""


def settled(stack: Any, expected: int) -> bool:
    """Every payment credited and either paid or kept by a client below its threshold, and
    no order open."""
    paid = stack.one("SELECT count(*) FROM payouts_accumulation WHERE state = 'paid'")
    kept, _ = stack.one(_KEPT_SQL)
    return paid + kept == expected and not stack.open_orders()


def _tree_cpu_seconds() -> dict[int, tuple[int, float]]:
    """{pid: (parent pid, user + system CPU seconds)} of every process on the machine."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return out


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def cpu_by_process(stack: Any) -> dict[str, float]:
    """CPU seconds of each process of the stack with its children (gunicorn's and the
    clusters' workers), as they stand now."""
    table = _tree_cpu_seconds()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)

    def total(pid: int) -> float:
        return table.get(pid, (0, 0.0))[1] + sum(total(c) for c in children.get(pid, []))

    return {name: total(proc.pid) for name, proc in stack.procs.items() if proc.alive()}


def drain(stack: Any, expected: int, timeout: float) -> float:
    """Seconds until the pipeline has settled (or nan at the timeout)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if settled(stack, expected):
            return time.monotonic() - started
        time.sleep(1)
    return float("nan")


def step_times(stack: Any) -> dict[str, dict[str, float]]:
    """Durations of the scheduled jobs (from their run records), of the distribution (the
    engine's completion of each batch: its log line) and of each payout, reserved to paid."""
    figures: dict[str, dict[str, float]] = {}
    for name in ("conversion_sweep", "payout_sweep", "advance"):
        rows = stack.rows(
            "SELECT extract(epoch FROM finished_at - started_at) * 1000 FROM backoffice_jobrun "
            "WHERE name = %s AND finished_at IS NOT NULL",
            [name],
        )
        figures[name] = summary_ms([float(r[0]) for r in rows])
    distributed = []
    for proc in stack.procs.values():
        for line in proc.log().splitlines():
            if "distributed batch" in line and " rows in " in line:
                distributed.append(float(line.rsplit(" rows in ", 1)[1].split()[0]))
    figures["distribution"] = summary_ms(distributed)
    rows = stack.rows(
        "SELECT extract(epoch FROM completed_at - created_at) * 1000 FROM payouts_payout "
        "WHERE completed_at IS NOT NULL"
    )
    figures["payout reserved -> paid"] = summary_ms([float(r[0]) for r in rows])
    rows = stack.rows(
        "SELECT extract(epoch FROM completed_at - created_at) * 1000 "
        "FROM batches_conversionbatch WHERE completed_at IS NOT NULL"
    )
    figures["batch created -> distributed"] = summary_ms([float(r[0]) for r in rows])
    return figures


def summary_ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "p50_ms": round(statistics.median(values), 1),
        "p99_ms": round(percentile(values, 99), 1),
        "max_ms": round(max(values), 1),
    }


# The longest wait of a payment beyond its client's threshold crossing: for each payout, the
# moment its rows' running total (in credit order) first reached the client's threshold; a
# client paid instantly crosses with each payment. Paid at the payout's completion.
_WAIT_SQL = """
WITH rows AS (
    SELECT p.id, p.completed_at, a.created_at, c.payout_threshold_usd AS threshold,
           sum(a.usdt) OVER (PARTITION BY p.id ORDER BY a.created_at, a.id) AS running
    FROM payouts_payout p
    JOIN payouts_accumulation a ON a.payout_id = p.id
    JOIN payouts_client c ON c.id = p.client_id
), crossing AS (
    SELECT id, completed_at, min(created_at) FILTER (WHERE running >= threshold) AS crossed,
           max(created_at) AS newest
    FROM rows GROUP BY id, completed_at
)
SELECT max(extract(epoch FROM completed_at - coalesce(crossed, newest))),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at
           - coalesce(crossed, newest)))
FROM crossing WHERE completed_at IS NOT NULL
"""


_GROWTH_SQL = """
SELECT relname, pg_total_relation_size(relid) FROM pg_stat_user_tables
ORDER BY pg_total_relation_size(relid) DESC LIMIT 12
"""


def checks(stack: Any, sent_ok: int, payment_count: int) -> list[tuple[str, bool, str]]:
    from tests.e2e import harness

    out: list[tuple[str, bool, str]] = []
    rows, ids = stack.one("SELECT count(*), count(DISTINCT payment_id) FROM payouts_accumulation")
    out.append(
        (
            "credited once",
            rows == ids == sent_ok == payment_count,
            f"{rows:,} rows, {ids:,} payment ids, {sent_ok:,} IPNs answered 200 of "
            f"{payment_count:,}",
        )
    )
    bad_batches = stack.one(
        "SELECT count(*) FROM (SELECT b.id FROM batches_conversionbatch b "
        "LEFT JOIN payouts_accumulation a ON a.batch_id = b.id "
        "WHERE b.state = 'completed' GROUP BY b.id, b.row_count, b.eth_total "
        "HAVING count(a.id) <> b.row_count OR sum(a.eth) <> b.eth_total) x"
    )
    unconverted = stack.one("SELECT count(*) FROM payouts_accumulation WHERE batch_id IS NULL")
    out.append(
        (
            "converted once",
            bad_batches == 0 and unconverted == 0,
            f"{unconverted} rows in no batch, {bad_batches} batches whose rows differ",
        )
    )
    kept, kept_clients = stack.one(_KEPT_SQL)
    unpaid = stack.one("SELECT count(*) FROM payouts_accumulation WHERE state <> 'paid'") - kept
    bad_payouts = stack.one(
        "SELECT count(*) FROM (SELECT p.id FROM payouts_payout p "
        "LEFT JOIN payouts_accumulation a ON a.payout_id = p.id GROUP BY p.id "
        "HAVING p.state <> 'completed' OR count(a.id) <> p.row_count "
        "OR sum(a.usdt) <> p.usdt_amount) x"
    )
    out.append(
        (
            "paid once",
            unpaid == 0 and bad_payouts == 0,
            f"{unpaid} rows not paid, {bad_payouts} payouts not completed or whose rows "
            f"differ; {kept} rows kept by {kept_clients} clients below their threshold",
        )
    )
    for name, check in (
        ("one deposit per order (sandbox chain)", lambda: harness.assert_one_deposit_per_order(
            stack, stack.sandbox.state())),
        ("books balance (our SQL and the sandbox)", lambda: harness.assert_books_balance(stack)),
        ("rows in one place", lambda: harness.assert_rows_in_one_place(stack)),
        ("reconcile", lambda: harness.assert_reconcile_ok(stack)),
    ):  # fmt: skip
        try:
            check()
            out.append((name, True, ""))
        except AssertionError as exc:
            out.append((name, False, str(exc)[:600]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0, help="IPNs per second offered")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--senders", type=int, default=200)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--web-workers", type=int, default=3)
    parser.add_argument("--pace", type=float, default=5.0, help="seconds between conversion sweeps")
    parser.add_argument(
        "--payout-pace",
        type=float,
        default=30.0,
        help="seconds between payout sweeps (a client is paid at most once per sweep)",
    )
    parser.add_argument(
        "--advance-every",
        type=float,
        default=60.0,
        help="seconds between runs of the engine's advance job (its schedule: 60)",
    )
    parser.add_argument("--sample", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--drain", type=float, default=600.0, help="seconds allowed to drain")
    parser.add_argument("--redis", default="", help="a Redis URL for the broker (else the ORM)")
    parser.add_argument(
        "--cluster-nice", type=int, default=0, help="nice value of the Q clusters (0: as web)"
    )
    parser.add_argument("--seed", type=int, default=16)
    args = parser.parse_args()

    import django

    django.setup()
    from tests.e2e.harness import DbServer, Stack, bootstrap_template

    server = DbServer()
    server.drop_stale("e2e_")
    template = f"bench_pipeline_{os.getpid()}"
    workdir = ROOT / ".data" / "bench-pipeline" / time.strftime("%Y%m%d-%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    print(
        f"pipeline: {args.rate:g} IPN/s for {args.duration:g} s from {args.senders} senders, "
        f"{args.clients} merchants; gunicorn ({args.web_workers} workers), two Q clusters "
        f"(nice {args.cluster_nice}), "
        f"({'Redis' if args.redis else 'ORM'} broker), the sandbox, conversion sweeps "
        f"every {args.pace:g} s, payout sweeps every {args.payout_pace:g} s, advance every "
        f"{args.advance_every:g} s; "
        f"logs in {workdir.relative_to(ROOT)}",
        flush=True,
    )
    bootstrap_template(server, template)
    references = add_clients(server, template, args.clients)
    stack = Stack(
        server, template, workdir, redis_url=args.redis or None, sandbox_knobs={"step_seconds": 1}
    )
    sampler: Sampler | None = None
    try:
        stack.start(web=False)
        stack.start_web(workers=args.web_workers)
        stack.start_cluster("qcluster-1", nice=args.cluster_nice)
        stack.start_cluster("qcluster-2", nice=args.cluster_nice)
        # The sweeps are paced faster than their schedules; `advance`, the engine's safety
        # net behind each order's own follow-ups, keeps its schedule: run back to back it
        # steps every open order without pause and takes a core of its own.
        stack.start_pacer(interval=args.pace, jobs="conversion_sweep")
        stack.start_pacer(interval=args.payout_pace, jobs="payout_sweep", name="pacer-payout")
        stack.start_pacer(interval=args.advance_every, jobs="advance", name="pacer-advance")
        requests, per_second = plan_payments(stack, references, args.rate, args.duration, args.seed)
        web_port = int(stack.web_url.rsplit(":", 1)[1])
        sandbox_port = int(stack.sandbox.url.rsplit(":", 1)[1].split("/")[0])
        sampler = Sampler(stack, args.sample, args.redis or None)
        sampler.start()
        load_started = time.monotonic()
        cpu_before, busy_before = cpu_by_process(stack), machine_busy_seconds()
        own_before = time.process_time()
        result = asyncio.run(
            offer_load(web_port, sandbox_port, requests, per_second, args.senders, args.rate)
        )
        load_s = time.monotonic() - load_started
        drain_s = drain(stack, result.ok, args.drain)
        sampler.stopping.set()
        sampler.join()
        cpu = {
            name: seconds - cpu_before.get(name, 0.0)
            for name, seconds in cpu_by_process(stack).items()
        }
        cpu["load generator (this process)"] = time.process_time() - own_before
        cpu["the rest: PostgreSQL, Redis, system"] = (
            machine_busy_seconds() - busy_before - sum(cpu.values())
        )
        elapsed = time.monotonic() - load_started
        print(
            f"CPU over the run ({elapsed:.0f} s, {os.cpu_count()} cores = "
            f"{elapsed * (os.cpu_count() or 1):.0f} CPU s):"
        )
        for name, seconds in sorted(cpu.items(), key=lambda kv: -kv[1]):
            print(f"  {name:<38} {seconds:8.1f} s ({seconds / elapsed:5.2f} cores)")
        return report(stack, args, result, load_s, drain_s, sampler.samples, len(requests))
    finally:
        if sampler is not None:
            sampler.stopping.set()
        stack.close()
        server.drop(template)


def report(
    stack: Any,
    args: argparse.Namespace,
    result: RunResult,
    load_s: float,
    drain_s: float,
    samples: list[Sample],
    payment_count: int,
) -> int:
    ms = [v * 1000 for v in result.latencies] or [float("nan")]
    print(
        f"intake: {result.ok:,}/{result.sent:,} answered 200 in {result.wall:.1f} s "
        f"({result.ok / result.wall:.1f} IPN/s offered {args.rate:g}); p50 "
        f"{statistics.median(ms):.1f} ms, p99 {percentile(ms, 99):.1f} ms, max {max(ms):.1f} ms "
        f"(target p99 <= 100 ms); errors {result.errors or 'none'}"
    )
    print(f"drained {drain_s:.1f} s after the load stopped (load {load_s:.1f} s)")
    for name, figures in step_times(stack).items():
        print(f"  {name:<30} {figures}")
    worst, median = stack.one(_WAIT_SQL)
    print(
        f"wait beyond the threshold crossing: median {float(median or 0):.1f} s, longest "
        f"{float(worst or 0):.1f} s (target <= 120 s)"
    )
    print(
        "over time (s since start: oldest unpaid payment s | oldest due s | queue depth | "
        "database MB | rows per state):"
    )
    step = max(1, len(samples) // 20)
    for sample in samples[::step]:
        states = " ".join(f"{k}={v}" for k, v in sorted(sample.states.items()))
        print(
            f"  {sample.at:7.0f}: {sample.oldest_unpaid_s:7.1f} | {sample.oldest_due_s:7.1f} | "
            f"{sample.queue:5d} | {sample.db_mb:8.1f} | {states}"
        )
    if samples:
        print(
            f"  peaks: oldest unpaid {max(s.oldest_unpaid_s for s in samples):.1f} s, oldest "
            f"due {max(s.oldest_due_s for s in samples):.1f} s, queue "
            f"{max(s.queue for s in samples)}, database {samples[-1].db_mb:.1f} MB at the end"
        )
    print(f"growth per payment credited ({payment_count:,} payments), largest tables:")
    for table, size in stack.rows(_GROWTH_SQL):
        # Exact counts: the statistics' live-tuple estimates lag behind a busy run.
        rows = stack.one(f'SELECT count(*) FROM "{table}"')  # noqa: S608 - a catalog name
        print(
            f"  {table:<34} {rows:>10,} rows ({rows / payment_count:6.2f} per payment) "
            f"{size / 2**20:8.1f} MB"
        )
    failed = 0
    for name, ok, detail in checks(stack, result.ok, payment_count):
        failed += not ok
        print(f"check {'ok  ' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
