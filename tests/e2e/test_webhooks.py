"""The webhooks over real HTTP (gunicorn, DEBUG off): duplicate, reordered, replayed and
tampered IPNs, and signed ChangeNOW nudges that make the engine poll at once."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from integrations.nowpayments.ipn import SIGNATURE_HEADER, sign_ipn
from tests.e2e.conftest import StackFactory
from tests.e2e.harness import Payment, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


_payment_ids = itertools.count(5_100_000_001)


def _payment(stack: Stack, reference: str, usd: str) -> Payment:
    # NOWPayments payment ids are integers; the intake refuses anything else.
    return stack.payment(reference, usd, payment_id=str(next(_payment_ids)))


def _accumulations(stack: Stack) -> list[tuple[object, ...]]:
    return stack.rows("SELECT payment_id, eth, usd, state FROM payouts_accumulation ORDER BY id")


def _outcomes(stack: Stack, provider: str) -> dict[str, int]:
    return dict(
        stack.rows(
            "SELECT outcome, count(*) FROM backoffice_webhookevent WHERE provider = %s "
            "GROUP BY outcome",
            [provider],
        )
    )


def test_it_credits_a_payment_once_however_often_and_in_whatever_order_it_arrives(
    stack: Stack,
) -> None:
    payment = _payment(stack, "demo-instant-usdt", "42.17")
    finished = stack.ipn_body(payment)

    # Reordered: "finished" arrives before "confirming", then "waiting" straggles in.
    first = stack.post_ipn(finished)
    late = [stack.post_ipn(stack.ipn_body(payment, status=s)) for s in ("confirming", "waiting")]
    # Replayed: the provider retries the same signed delivery, some of them at once.
    with ThreadPoolExecutor(8) as pool:
        replays = list(pool.map(lambda _: stack.post_ipn(finished), range(16)))

    assert (first.status_code, first.json()["status"]) == (200, "applied")
    assert [(r.status_code, r.json()["status"]) for r in late] == [(200, "ignored")] * 2
    assert {(r.status_code, r.json()["status"]) for r in replays} == {(200, "duplicate")}
    assert _accumulations(stack) == [(payment.payment_id, payment.eth, payment.usd, "pending")]

    # The same payment id with other facts, correctly signed: kept for finance, not credited.
    conflicting = dict(finished, outcome_amount=str(payment.eth * 2))
    answer = stack.post_ipn(conflicting)
    assert (answer.status_code, answer.json()["status"]) == (200, "unmatched")
    assert _accumulations(stack) == [(payment.payment_id, payment.eth, payment.usd, "pending")]
    # Each distinct delivery is stored once; the replays of a stored one add nothing.
    assert _outcomes(stack, "nowpayments") == {"applied": 1, "ignored": 2, "unmatched": 1}


def test_it_refuses_tampered_unsigned_and_malformed_ipns(stack: Stack) -> None:
    payment = _payment(stack, "demo-threshold-xmr", "19.99")
    body, signature = sign_ipn(stack.ipn_body(payment), "e2e-ipn-secret")
    tampered = body.replace(str(payment.eth).encode(), str(payment.eth * 10).encode())
    assert tampered != body
    _, wrong_key = sign_ipn(stack.ipn_body(payment), "not-the-secret")
    raw_signature = hmac.new(b"e2e-ipn-secret", b"{not json\x00", hashlib.sha512).hexdigest()

    answers = [
        stack.post_ipn(stack.ipn_body(payment), body=tampered, signature=signature),
        stack.post_ipn(stack.ipn_body(payment), signature=wrong_key),
        requests.post(
            f"{stack.web_url}/webhooks/nowpayments/",
            data=body,
            headers={"Content-Type": "application/json"},
            timeout=10,
        ),
        # Signed, but not JSON: kept for finance and answered 400 with the reason.
        requests.post(
            f"{stack.web_url}/webhooks/nowpayments/",
            data=b"{not json\x00",
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: raw_signature},
            timeout=10,
        ),
        # Thirty thousand brackets and a fake signature: refused before any parsing.
        requests.post(
            f"{stack.web_url}/webhooks/nowpayments/",
            data=b"[" * 30_000,
            headers={"Content-Type": "application/json", SIGNATURE_HEADER: "ab" * 64},
            timeout=10,
        ),
    ]

    assert [a.status_code for a in answers] == [401, 401, 401, 400, 401]
    assert "not JSON" in answers[3].json()["error"]
    assert _accumulations(stack) == []
    # Kept once per distinct body (the wrong key and the missing signature came with the
    # same bytes); the signed one as unmatched, byte for byte.
    assert _outcomes(stack, "nowpayments") == {"rejected": 3, "unmatched": 1}
    assert (
        bytes(stack.one("SELECT body FROM backoffice_webhookevent WHERE outcome = 'unmatched'"))
        == b"{not json\x00"
    )
    # The genuine delivery still goes through afterwards.
    genuine = stack.post_ipn(stack.ipn_body(payment))
    assert (genuine.status_code, genuine.json()["status"]) == (200, "applied")


def test_it_polls_an_exchange_at_once_when_a_signed_nudge_arrives(
    make_stack: StackFactory,
) -> None:
    # Exchanges crawl (a minute per status) unless the sandbox clock is moved: the batch
    # waits in `converting` with nothing scheduled to look at it for a while.
    stack = make_stack(step_seconds=60)
    stack.pay(*[_payment(stack, "demo-instant-usdt", "25.00") for _ in range(2)])
    stack.start_cluster()
    sweep = stack.manage_json("sweep")
    assert sweep["created"] is True
    batch_id, exchange_id = stack.wait_for(
        lambda: stack.rows(
            "SELECT id, exchange_id FROM batches_conversionbatch WHERE state = 'converting'"
        ),
        "the batch to convert",
        timeout=30,
    )[0]
    # The step that moved it to `converting` enqueued one more look (reserved, created,
    # sent, converting: four steps); let that one run and find nothing new.
    stack.wait_for(
        lambda: (
            stack.one(
                "SELECT count(*) FROM django_q_task WHERE func = 'payouts.tasks.advance_order' "
                "AND success"
            )
            >= 4
            and stack.one("SELECT count(*) FROM django_q_ormq") == 0
        ),
        "the follow-up steps to run out",
        timeout=10,
    )
    assert stack.sandbox is not None
    stack.sandbox.advance_clock(300)
    assert stack.sandbox.exchange(exchange_id)["status"] == "finished"
    time.sleep(1)  # a worker with nothing to do would have moved it by now
    assert stack.one("SELECT state FROM batches_conversionbatch") == "converting"

    answer = stack.post_nudge(exchange_id)

    assert (answer.status_code, answer.json()["status"]) == (200, "nudged")
    stack.wait_for(
        lambda: stack.one("SELECT state FROM batches_conversionbatch") == "completed",
        "the nudged batch to complete",
        timeout=10,
    )
    # It was the nudge, not the scheduled advance, that polled the exchange.
    assert stack.one("SELECT count(*) FROM backoffice_jobrun WHERE name = 'advance'") == 0
    assert (
        stack.one("SELECT reference FROM backoffice_webhookevent WHERE outcome = 'nudged'")
        == exchange_id
    )
    assert str(batch_id)

    # Replays of the very same signed nudge poll nothing more.
    replays = [
        requests.post(
            f"{stack.web_url}/webhooks/changenow/",
            data=answer.request.body,
            headers={
                "Content-Type": "application/json",
                "X-Signature": answer.request.headers["X-Signature"],
            },
            timeout=10,
        ).json()["status"]
        for _ in range(5)
    ]
    assert replays == ["duplicate"] * 5
    forged = stack.post_nudge(exchange_id, secret="not-the-secret")
    stale = stack.post_nudge(exchange_id, timestamp=int(time.time()) - 3600)
    unknown = stack.post_nudge("ffffffffffffff")
    assert [forged.status_code, stale.status_code] == [401, 401]
    assert (unknown.status_code, unknown.json()["status"]) == (200, "unknown_exchange")
    assert _outcomes(stack, "changenow") == {"nudged": 1, "rejected": 1, "unknown_exchange": 1}
    assert json.loads(
        bytes(
            stack.one("SELECT body FROM backoffice_webhookevent WHERE outcome = 'unknown_exchange'")
        )
    ) == {"id": "ffffffffffffff"}
