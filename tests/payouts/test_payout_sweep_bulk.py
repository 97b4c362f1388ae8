"""The payout sweep reserves every client paid whole in one statement: the same queries for
three clients as for thirty, each payout holding exactly its client's rows and destination
with its audit event, each row reserved once when two clusters sweep at once, and a bounded
number of follow-up tasks."""

from __future__ import annotations

import inspect
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from payouts import payout_sweep as sweep_module
from payouts.limits import PairRange
from payouts.models import Accumulation, AuditEvent, Client, Payout
from payouts.payout_sweep import payout_sweep
from payouts.transitions import Actor
from tests.batches.test_split_races import at_once, breaches_named, converted_client

ACTOR = Actor.system("tests")


def no_maximum(_currency: str, _network: str) -> PairRange:
    return PairRange(Decimal("1"), None)


def sweep_queries(clients: int) -> int:
    for _ in range(clients):
        converted_client(rows=3, usdt="10")
    with CaptureQueriesContext(connection) as queries:
        result = payout_sweep(actor=ACTOR, range_for=no_maximum)
    assert result.created == clients
    return len(queries)


@pytest.mark.django_db
def test_it_reserves_thirty_clients_with_the_same_queries_as_three() -> None:
    def all_paid() -> None:
        Payout.objects.update(state="completed", completed_at="2026-01-01T00:00Z")
        Accumulation.objects.filter(state="paying").update(state="paid")

    sweep_queries(1)  # first use: run-time settings and the like are created
    all_paid()
    few = sweep_queries(3)
    all_paid()
    many = sweep_queries(30)
    assert many == few, f"{few} queries for 3 clients, {many} for 30"


@pytest.mark.django_db
def test_each_payout_holds_exactly_its_clients_rows_destination_and_audit_event() -> None:
    clients = [converted_client(rows=n, usdt="7.25") for n in (1, 2, 5)]
    Client.objects.filter(pk=clients[1].pk).update(payout_address="bc1qdestinationchanged00")

    result = payout_sweep(actor=ACTOR, range_for=no_maximum)

    assert [p["client"] for p in result.payouts] == [c.reference for c in clients]
    for client, rows in zip(clients, (1, 2, 5), strict=True):
        client.refresh_from_db()
        payout = Payout.objects.get(client=client)
        moved = Accumulation.objects.filter(payout=payout)
        assert payout.state == "reserved" and payout.split_total_usdt is None
        assert (payout.row_count, payout.usdt_amount) == (rows, Decimal("7.25") * rows)
        assert {a.state for a in moved} == {"paying"} and moved.count() == rows
        assert (payout.currency, payout.network, payout.address) == (
            client.payout_currency,
            client.payout_network,
            client.payout_address,
        )
        (event,) = AuditEvent.objects.filter(object_type="payout", object_id=str(payout.pk))
        assert (event.kind, event.to_state, event.actor) == ("created", "reserved", ACTOR.name)
        assert event.data["client"] == client.reference and event.data["rows"] == rows
        assert Decimal(event.data["usdt"]) == payout.usdt_amount
        assert event.data["destination"].endswith(client.payout_address)
    assert breaches_named("3 payout rows") == []


@pytest.mark.django_db
def test_a_client_whose_rows_left_meanwhile_gets_no_payout_and_the_others_are_paid(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gone, kept = converted_client(rows=2), converted_client(rows=2)
    candidates = sweep_module._candidates

    def rows_move_after_the_read() -> list[sweep_module._Candidate]:
        found = candidates()
        Accumulation.objects.filter(client=gone).update(  # as a release to the sweep would
            state="pending", batch=None, usdt=None
        )
        return found

    monkeypatch.setattr(sweep_module, "_candidates", rows_move_after_the_read)
    result = payout_sweep(actor=ACTOR, range_for=no_maximum)

    assert [p["client"] for p in result.payouts] == [kept.reference]
    assert {"client": gone.reference, "reason": "rows_moved_meanwhile"} in result.skipped
    assert not Payout.objects.filter(client=gone).exists()


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_reserve_each_clients_rows_once() -> None:
    clients = [converted_client(rows=4) for _ in range(12)]
    results = at_once(lambda: payout_sweep(actor=ACTOR, range_for=no_maximum))
    assert sum(r.created for r in results) == 12, [r.as_json() for r in results]
    for client in clients:
        (payout,) = Payout.objects.filter(client=client)
        assert Accumulation.objects.filter(payout=payout, state="paying").count() == 4
    assert not Accumulation.objects.filter(state="converted").exists()
    assert breaches_named("3 payout rows") == []


@pytest.mark.django_db
def test_reconcile_names_a_row_moved_to_another_clients_payout() -> None:
    first, second = converted_client(rows=2), converted_client(rows=2)
    payout_sweep(actor=ACTOR, range_for=no_maximum)
    row = Accumulation.objects.filter(client=first).first()
    Accumulation.objects.filter(pk=row.pk).update(payout=Payout.objects.get(client=second))
    named = breaches_named("3 payout rows")
    assert named and any(str(Payout.objects.get(client=first).pk) in n for n in named)


@pytest.mark.django_db
def test_a_large_sweep_enqueues_the_first_payouts_and_one_walk_for_the_rest(
    settings: object, django_capture_on_commit_callbacks: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.ENGINE_ENQUEUE_FOLLOWUPS = True  # type: ignore[attr-defined]
    for _ in range(5):
        converted_client(rows=1)
    monkeypatch.setattr(sweep_module, "FOLLOWUPS_PER_SWEEP", 2)
    with django_capture_on_commit_callbacks() as callbacks:  # type: ignore[operator]
        assert payout_sweep(actor=ACTOR, range_for=no_maximum).created == 5
    queued = [inspect.getclosurevars(cb).nonlocals for cb in callbacks]
    assert [q["func"] for q in queued] == [
        "payouts.tasks.advance_order",
        "payouts.tasks.advance_order",
        "payouts.tasks.advance_open_orders",
    ]
    first = {q["args"][1] for q in queued[:2]}
    assert first <= {str(pk) for pk in Payout.objects.values_list("pk", flat=True)}
