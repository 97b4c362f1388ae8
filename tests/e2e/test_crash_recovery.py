"""kill -9 of the Q cluster at each step of a batch, then a restart: the pipeline completes,
no order ever has a second broadcast transaction, and the sums are exact.

Each test stops the cluster at a precise point by making the sandbox hang the next call of
that step (or, for the distribution, by holding a row lock the distribution needs), waits
until a worker is inside it, and kills the whole process group."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.conftest import StackFactory
from tests.e2e.harness import (
    Stack,
    assert_books_balance,
    assert_reconcile_ok,
    host_transactions,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MERCHANTS = ("demo-instant-usdt", "demo-threshold-btc", "demo-threshold-xmr")
HANG = 120  # seconds a faulted call hangs: far longer than any test waits


def _pay_one_batch_worth(stack: Stack) -> int:
    payments = [stack.payment(MERCHANTS[i % 3], "30.00") for i in range(6)]
    stack.pay(*payments)
    return len(payments)


def _batch(stack: Stack) -> tuple[Any, ...] | None:
    rows = stack.rows("SELECT id, state, exchange_id FROM batches_conversionbatch")
    return rows[0] if rows else None


def _transfers(stack: Stack) -> list[tuple[Any, ...]]:
    return stack.rows(
        "SELECT attempt, state, tx_hash, broadcast_count FROM payouts_transfer "
        "WHERE batch_id IS NOT NULL ORDER BY id"
    )


def _hung(stack: Stack) -> bool:
    """The fault rule was taken by a request: a worker now waits inside that call."""
    assert stack.sandbox is not None
    return not stack.sandbox.fail_rules()


def _finish(stack: Stack, count: int) -> None:
    """Restart the cluster and check that everything completes exactly once."""
    stack.start_cluster("qcluster-restarted")
    stack.wait_all_paid(count, timeout=90)
    batch_id = _batch(stack)[0]  # type: ignore[index]
    assert len(_transfers(stack)) == 1
    assert (
        stack.one("SELECT count(*) FROM payouts_exchangeattempt WHERE batch_id = %s", [batch_id])
        == 1
    )
    assert stack.sandbox is not None
    state = stack.sandbox.state()
    assert [e["status"] for e in state["exchanges"] if e["fromCurrency"] == "eth"] == ["finished"]
    assert len([d for d in state["deposits"] if d["asset"] == "eth"]) == 1
    completions = stack.one(
        "SELECT count(*) FROM payouts_auditevent WHERE object_type = 'conversionbatch' "
        "AND object_id = %s AND to_state = 'completed'",
        [str(batch_id)],
    )
    assert completions == 1
    assert_books_balance(stack)
    assert_reconcile_ok(stack)


def test_it_recovers_from_a_kill_after_the_exchange_was_created(stack: Stack) -> None:
    count = _pay_one_batch_worth(stack)
    assert stack.sandbox is not None
    # The send step's first wallet call hangs: the exchange exists, nothing is signed yet.
    stack.sandbox.fail(path="/rpc", rpc_method="eth_chainId", delay=HANG)
    cluster = stack.start_cluster()
    stack.start_pacer()
    stack.wait_for(
        lambda: (_batch(stack) or (None, ""))[1] == "exchange_created" and _hung(stack),
        "the batch to hang right after its exchange was created",
    )

    cluster.kill9()

    assert _transfers(stack) == []
    assert len(stack.sandbox.exchanges()) == 1
    _finish(stack, count)


def test_it_recovers_from_a_kill_after_signing_before_the_broadcast(stack: Stack) -> None:
    count = _pay_one_batch_worth(stack)
    assert stack.sandbox is not None
    stack.sandbox.fail(path="/rpc", rpc_method="eth_sendRawTransaction", delay=HANG)
    cluster = stack.start_cluster()
    stack.start_pacer()
    stack.wait_for(
        lambda: [t[1] for t in _transfers(stack)] == ["signed"] and _hung(stack),
        "the signed transaction's broadcast to hang",
    )

    cluster.kill9()

    [(attempt, state, signed_hash, broadcasts)] = _transfers(stack)
    assert (attempt, state, broadcasts) == (1, "signed", 0)
    assert host_transactions(stack) == []  # it never reached the chain
    _finish(stack, count)
    # The stored bytes were broadcast: never a second signature for the same intent.
    assert _transfers(stack)[0][2] == signed_hash


def test_it_recovers_from_a_kill_after_the_broadcast_reached_the_chain(stack: Stack) -> None:
    count = _pay_one_batch_worth(stack)
    assert stack.sandbox is not None
    # The broadcast is mined, but its answer never comes back to the worker.
    stack.sandbox.fail(path="/rpc", rpc_method="eth_sendRawTransaction", delay=HANG, process=True)
    cluster = stack.start_cluster()
    stack.start_pacer()
    stack.wait_for(
        lambda: _hung(stack) and len(stack.sandbox.state()["deposits"]) == 1,  # type: ignore[union-attr]
        "the deposit to be mined while the broadcast's answer hangs",
    )

    cluster.kill9()

    [(_attempt, state, signed_hash, broadcasts)] = _transfers(stack)
    assert (state, broadcasts) == ("signed", 0)  # we never learned that it went out
    [mined] = host_transactions(stack)
    assert mined["hash"].lower() == signed_hash.lower()
    _finish(stack, count)
    assert _transfers(stack)[0][2] == signed_hash


def test_it_recovers_from_a_kill_during_the_distribution(make_stack: StackFactory) -> None:
    # Slower exchange steps leave time to take the row lock before the exchange finishes.
    stack = make_stack(step_seconds=1.5)
    count = _pay_one_batch_worth(stack)
    cluster = stack.start_cluster()
    stack.start_pacer()
    batch_id = stack.wait_for(lambda: (_batch(stack) or (None,))[0], "the batch")
    blocker = stack.server.connect(stack.db_name)
    blocker.autocommit = False
    try:
        # Hold one of the batch's rows: the distribution's UPDATE will wait for it, inside
        # the distribution's transaction.
        blocker.execute(
            "SELECT id FROM payouts_accumulation WHERE batch_id = %s LIMIT 1 FOR UPDATE",
            [batch_id],
        )
        stack.wait_for(
            lambda: stack.rows(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s "
                "AND wait_event_type = 'Lock' AND query LIKE %s",
                [stack.db_name, "%usdt = div(%"],
            ),
            "the distribution to wait for the locked row",
            timeout=30,
        )

        cluster.kill9()

    finally:
        blocker.rollback()
        blocker.close()
    # The killed worker's transaction never commits: its backend goes once it notices.
    stack.wait_for(
        lambda: (
            not stack.rows(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND query LIKE %s",
                [stack.db_name, "%usdt = div(%"],
            )
        ),
        "the killed worker's backend to go away",
        timeout=30,
    )
    assert stack.one("SELECT state FROM batches_conversionbatch WHERE id = %s", [batch_id]) in (
        "funds_sent",
        "converting",
    )
    assert stack.states("payouts_accumulation") == {"converting": count}
    _finish(stack, count)
