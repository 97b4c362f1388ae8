"""Provider faults from the sandbox: rate limits and server errors, a create whose answer is
lost, exchanges that fail, refund or expire, an unknown status and a stuck exchange."""

from __future__ import annotations

from decimal import Decimal
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


def _pay(stack: Stack, count: int = 6, usd: str = "30.00") -> int:
    stack.pay(*[stack.payment(MERCHANTS[i % 3], usd) for i in range(count)])
    return count


def _batches(stack: Stack) -> list[tuple[Any, ...]]:
    return stack.rows(
        "SELECT id, state, exchange_id, last_error_code FROM batches_conversionbatch "
        "ORDER BY created_at"
    )


def _eth_exchanges(stack: Stack) -> list[dict[str, Any]]:
    assert stack.sandbox is not None
    return [e for e in stack.sandbox.exchanges() if e["fromCurrency"] == "eth"]


def _advance_runs_since(stack: Stack, moment: Any) -> int:
    return int(
        stack.one(
            "SELECT count(*) FROM backoffice_jobrun WHERE name = 'advance' "
            "AND outcome = 'ok' AND started_at > %s",
            [moment],
        )
    )


def test_it_completes_through_rate_limits_and_server_errors_on_every_kind_of_call(
    stack: Stack,
) -> None:
    count = _pay(stack)
    box = stack.sandbox
    assert box is not None
    # Reads are retried by the HTTP layer (honouring Retry-After); a create and a broadcast
    # are never retried blindly: the engine backs off and tries the step again.
    # Two failures in a row at most per read: the HTTP layer tries a read three times.
    box.fail(path="/v2/exchange/range", status=429, retry_after=1)
    box.fail(path="/v2/exchange/range", status=500)
    box.fail(path="/v2/exchange", method="POST", status=429, retry_after=1)
    box.fail(path="/v2/exchange/by-id", status=503, count=2, retry_after=1)
    box.fail(path="/rpc", rpc_method="eth_sendRawTransaction", status=502)
    stack.start_cluster()
    stack.start_pacer()

    stack.wait_all_paid(count, timeout=120)

    assert box.fail_rules() == []
    [(batch_id, state, _exchange, _code)] = _batches(stack)
    assert state == "completed"
    errors = stack.rows(
        "SELECT data->>'code' FROM payouts_auditevent WHERE object_type = 'conversionbatch' "
        "AND object_id = %s AND kind = 'step_error' ORDER BY id",
        [str(batch_id)],
    )
    assert [code for (code,) in errors] == ["rate_limited", "server_error"]
    # The failed broadcast was retried with the same signed bytes: one transaction.
    assert len(host_transactions(stack)) == 1 + stack.one("SELECT count(*) FROM payouts_payout")
    assert len(_eth_exchanges(stack)) == 1
    assert_books_balance(stack)
    assert_reconcile_ok(stack)


def test_it_funds_only_the_new_exchange_after_a_create_whose_answer_was_lost(
    stack: Stack,
) -> None:
    count = _pay(stack)
    assert stack.sandbox is not None
    # ChangeNOW creates the exchange, then the gateway answers 504: we never learn its id.
    stack.sandbox.fail(path="/v2/exchange", method="POST", status=504, process=True)
    stack.start_cluster()
    stack.start_pacer()

    stack.wait_all_paid(count, timeout=90)

    lost, funded = _eth_exchanges(stack)
    assert lost["status"] == "waiting" and lost["amountFrom"] is None
    assert funded["status"] == "finished"
    [(batch_id, _state, exchange_id, _code)] = _batches(stack)
    assert exchange_id == funded["id"]
    attempts = stack.rows(
        "SELECT status, exchange_id FROM payouts_exchangeattempt WHERE batch_id = %s ORDER BY id",
        [batch_id],
    )
    assert attempts == [("create_failed", ""), ("finished", funded["id"])]
    credited = [d for d in stack.sandbox.state()["deposits"] if d["exchange_id"]]
    assert len(credited) == 1 + stack.one(
        "SELECT count(*) FROM payouts_payout WHERE exchange_id <> ''"
    )
    assert_books_balance(stack)
    # The lost exchange never received funds: harmless by design, so reconcile is clean.
    report = stack.manage_json("reconcile", check=False)
    assert report == {"ok": True, "breaches": []}, report


@pytest.mark.parametrize("failure", ["expired_before_deposit", "create_refused"])
def test_it_returns_rows_to_pending_and_batches_them_again_when_an_exchange_fails_unfunded(
    stack: Stack, failure: str
) -> None:
    count = _pay(stack)
    box = stack.sandbox
    assert box is not None
    if failure == "expired_before_deposit":
        box.config(waiting_expiry_seconds=0)  # expires the moment it is created
    else:
        box.fail(
            path="/v2/exchange",
            method="POST",
            status=400,
            error="pair_is_inactive",
            message="Pair is inactive",
        )
    stack.start_cluster()
    stack.start_pacer()
    stack.wait_for(
        lambda: any(b[1] == "failed" for b in _batches(stack)), "the first batch to fail"
    )
    box.config(waiting_expiry_seconds=7 * 24 * 3600)

    stack.wait_all_paid(count, timeout=90)

    batches = _batches(stack)
    failed = [b for b in batches if b[1] == "failed"]
    assert failed and batches[-1][1] == "completed"
    assert all(b[1] == "failed" for b in batches[:-1]), batches
    for batch_id, _state, _exchange, _code in failed:
        assert (
            stack.one("SELECT count(*) FROM payouts_transfer WHERE batch_id = %s", [batch_id]) == 0
        )
        released = stack.one(
            "SELECT data->>'accumulations' FROM payouts_auditevent "
            "WHERE object_id = %s AND to_state = 'failed'",
            [str(batch_id)],
        )
        assert released == "converting -> pending"
    # Every payment ended in the one completed batch.
    assert stack.one("SELECT count(DISTINCT batch_id) FROM payouts_accumulation") == 1
    assert len([d for d in box.state()["deposits"] if d["asset"] == "eth"]) == 1
    assert_books_balance(stack)


@pytest.mark.parametrize("outcome", ["refunded", "expired"])
def test_it_holds_the_batch_for_an_operator_when_the_exchange_fails_after_our_deposit(
    make_stack: StackFactory, outcome: str
) -> None:
    stack = make_stack(step_seconds=2)
    count = _pay(stack)
    box = stack.sandbox
    assert box is not None
    stack.start_cluster()
    stack.start_pacer()
    exchange = stack.wait_for(
        lambda: next((e for e in _eth_exchanges(stack) if e["depositReceivedAt"]), None),
        "our deposit to reach the exchange",
    )
    box.script(exchange["id"], outcome=outcome)

    [(batch_id, *_)] = stack.wait_for(
        lambda: [b for b in _batches(stack) if b[1] == "needs_attention"],
        "the batch to need attention",
    )
    since = stack.one("SELECT now()")
    stack.wait_for(lambda: _advance_runs_since(stack, since) >= 3, "three more advance runs")

    [(_id, state, _exchange, code)] = _batches(stack)
    assert (state, code) == ("needs_attention", f"exchange_{outcome}")
    # Funds left: nothing is released, re-batched or sent again without an operator.
    assert stack.states("payouts_accumulation") == {"converting": count}
    assert len(host_transactions(stack)) == 1
    assert len(_eth_exchanges(stack)) == 1
    assert stack.one("SELECT count(*) FROM payouts_transfer WHERE batch_id = %s", [batch_id]) == 1
    assert stack.one("SELECT count(*) FROM payouts_payout") == 0
    if outcome == "refunded":
        assert box.exchange(exchange["id"])["refundCredited"] is True
    assert_reconcile_ok(stack)


def test_it_records_an_unknown_status_and_completes_once_the_exchange_finishes(
    make_stack: StackFactory,
) -> None:
    stack = make_stack(step_seconds=1)
    count = _pay(stack)
    box = stack.sandbox
    assert box is not None
    stack.start_cluster()
    stack.start_pacer()
    exchange = stack.wait_for(
        lambda: next((e for e in _eth_exchanges(stack) if e["depositReceivedAt"]), None),
        "our deposit to reach the exchange",
    )
    box.script(exchange["id"], outcome="unknown", status="hold_for_kyc")
    stack.wait_for(
        lambda: stack.rows(
            "SELECT 1 FROM batches_conversionbatch WHERE provider_status = 'hold_for_kyc'"
        ),
        "the unknown status to be recorded",
    )
    since = stack.one("SELECT now()")
    stack.wait_for(lambda: _advance_runs_since(stack, since) >= 3, "three more advance runs")

    [(batch_id, state, _exchange, _code)] = _batches(stack)
    assert state == "converting"  # recorded, neither failed nor crashed
    history = stack.one(
        "SELECT status_history FROM payouts_exchangeattempt WHERE batch_id = %s", [batch_id]
    )
    assert "hold_for_kyc" in [h["status"] for h in history]
    assert stack.one("SELECT count(*) FROM backoffice_jobrun WHERE outcome = 'failed'") == 0

    box.script(exchange["id"], outcome="finished", amount_to="180.123456")
    stack.wait_all_paid(count)
    assert stack.one("SELECT usdt_received FROM batches_conversionbatch") == Decimal("180.123456")
    assert_books_balance(stack)
    assert_reconcile_ok(stack)


def test_it_keeps_polling_a_stuck_exchange_and_the_watchdog_flags_it(stack: Stack) -> None:
    count = _pay(stack)
    box = stack.sandbox
    assert box is not None
    stack.start_cluster()
    stack.start_pacer()
    exchange = stack.wait_for(
        lambda: next((e for e in _eth_exchanges(stack) if e["depositReceivedAt"]), None),
        "our deposit to reach the exchange",
    )
    box.script(exchange["id"], outcome="stuck", status="exchanging")
    stack.wait_for(
        lambda: stack.rows(
            "SELECT 1 FROM batches_conversionbatch WHERE provider_status = 'exchanging'"
        ),
        "the exchanging status to be recorded",
    )
    since = stack.one("SELECT now()")
    stack.wait_for(lambda: _advance_runs_since(stack, since) >= 3, "three more advance runs")
    [(batch_id, state, _exchange, _code)] = _batches(stack)
    assert state == "converting"
    assert len(host_transactions(stack)) == 1
    assert box.exchange(exchange["id"])["status"] == "exchanging"

    # An approver shortens the stuck limit; the next watchdog run raises the alert.
    stack.manage(
        "shell",
        "-c",
        "from payouts.services import runtime_settings_update as u; "
        "from payouts.transitions import Actor; "
        "u(changes={'stuck_converting_minutes': 0}, actor=Actor.system('e2e'), "
        "reason='e2e: flag stuck exchanges now')",
    )
    key = f"order:batch:{batch_id}:stuck:converting"
    stack.stop("pacer")
    stack.start_pacer(jobs="watchdog")
    stack.wait_for(
        lambda: stack.rows("SELECT status FROM backoffice_alert WHERE key = %s", [key]),
        "the watchdog to flag the stuck batch",
        timeout=30,
    )

    box.script(exchange["id"], outcome="finished")
    stack.stop("pacer")
    stack.start_pacer()
    stack.wait_all_paid(count)
    assert_books_balance(stack)
