"""From signed payments to paid merchants with real processes, and the sweep race with two
Q clusters (ORM broker, and Redis when E2E_REDIS_URL names one)."""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import redis

from tests.e2e.conftest import StackFactory
from tests.e2e.harness import (
    PY,
    REPO,
    RUN_SCRIPT,
    Stack,
    assert_books_balance,
    assert_books_equal_chain,
    assert_reconcile_ok,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEMO = ("demo-instant-usdt", "demo-threshold-btc", "demo-threshold-xmr")


def test_it_pays_every_merchant_exactly_from_signed_payments(stack: Stack) -> None:
    payments = [
        stack.payment(DEMO[i % 3], usd)
        for i, usd in enumerate(["31.10", "29.95", "27.40", "33.33", "30.00", "26.71"])
    ]
    stack.pay(*payments)
    stack.start_cluster()
    stack.start_pacer()

    stack.wait_all_paid(len(payments))

    assert stack.states("batches_conversionbatch") == {"completed": 1}
    # One payout per merchant: a direct USDT transfer and two exchanges (BTC, XMR).
    payouts = stack.rows("SELECT currency, state, row_count FROM payouts_payout ORDER BY 1")
    assert payouts == [("btc", "completed", 2), ("usdt", "completed", 2), ("xmr", "completed", 2)]
    credited = stack.one("SELECT sum(eth) FROM payouts_accumulation")
    assert credited == sum(p.eth for p in payments)
    # The platform kept its fee: 3 % of the client ETH's worth, plus rounding dust.
    received, platform = stack.one(
        "SELECT usdt_received, platform_usdt FROM batches_conversionbatch"
    )
    assert Decimal("0.029") * received < platform < Decimal("0.031") * received
    status = stack.manage_json("status")
    assert status["accumulations"]["paid"]["count"] == len(payments)
    assert status["payouts"]["completed"] == 3
    assert_books_balance(stack)
    assert_books_equal_chain(stack)
    assert_reconcile_ok(stack)


def _redis_url() -> str:
    url = os.environ.get("E2E_REDIS_URL", "")
    if not url:
        pytest.skip("E2E_REDIS_URL is not set: no Redis to run the Redis-broker variant on")
    client = redis.Redis.from_url(url, socket_timeout=2)
    client.flushdb()  # a queue left over from an earlier run would feed these clusters
    return url


@pytest.mark.parametrize("broker", ["orm", "redis"])
def test_it_creates_one_batch_when_two_clusters_and_a_manual_sweep_race(
    make_stack: StackFactory, broker: str
) -> None:
    stack = make_stack(redis_url=_redis_url() if broker == "redis" else None)
    payments = [stack.payment(DEMO[i % 3], "20.00") for i in range(9)]
    stack.pay(*payments)
    stack.start_cluster("qcluster-1")
    stack.start_cluster("qcluster-2")

    # The scheduled sweep (enqueued many times, run by four workers in two clusters) and
    # two operators' `manage.py sweep` all at once.
    enqueue = [
        PY, RUN_SCRIPT, "pace", "--interval", "0.05", "--duration", "1.5",
        "--jobs", "conversion_sweep,conversion_sweep",
    ]  # fmt: skip
    with ThreadPoolExecutor(3) as pool:
        burst = pool.submit(
            subprocess.run, enqueue, cwd=REPO, env=stack.env, capture_output=True, timeout=60
        )
        manual = [pool.submit(stack.manage_json, "sweep") for _ in range(2)]
        sweeps = [m.result() for m in manual]
        assert burst.result().returncode == 0

    stack.wait_for(lambda: stack.states("batches_conversionbatch"), "the batch", timeout=20)
    stack.wait_for(
        lambda: (
            stack.one(
                "SELECT count(*) FROM backoffice_jobrun WHERE name = 'conversion_sweep' "
                "AND outcome <> 'running'"
            )
            >= 4
        ),
        "at least four scheduled sweeps to race",
        timeout=20,
    )
    assert (
        stack.one(
            "SELECT count(*) FROM backoffice_jobrun WHERE name = 'conversion_sweep' "
            "AND outcome = 'failed'"
        )
        == 0
    )
    stack.start_pacer()
    stack.wait_all_paid(len(payments))

    batches = stack.rows("SELECT id, row_count, eth_total FROM batches_conversionbatch")
    assert len(batches) == 1, batches
    assert batches[0][1:] == (9, sum(p.eth for p in payments))
    created_by_jobs = stack.one(
        "SELECT count(*) FROM backoffice_jobrun "
        "WHERE name = 'conversion_sweep' AND summary->>'created' = 'true'"
    )
    assert created_by_jobs + sum(1 for s in sweeps if s["created"]) == 1, sweeps
    assert stack.sandbox is not None
    state = stack.sandbox.state()
    eth_exchanges = [e for e in state["exchanges"] if e["fromCurrency"] == "eth"]
    assert [e["id"] for e in eth_exchanges] == [
        stack.one("SELECT exchange_id FROM batches_conversionbatch")
    ]
    eth_deposits = [d for d in state["deposits"] if d["asset"] == "eth"]
    assert len(eth_deposits) == 1, eth_deposits
    assert stack.one("SELECT count(*) FROM payouts_transfer WHERE batch_id IS NOT NULL") == 1
    assert_books_balance(stack)
    assert_reconcile_ok(stack)
