"""Every allowed and every forbidden move of each object, through the locked function."""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction

from batches.models import ConversionBatch
from payouts.models import Accumulation, AuditEvent, FundedOrder, Payout
from payouts.transitions import Actor, TransitionError, check_move, transition
from tests.factories import (
    AccumulationFactory,
    BatchFactory,
    PayoutFactory,
    order_in_state,
)

ORDER_STATES = [s.value for s in FundedOrder.State]
ACC_STATES = [s.value for s in Accumulation.State]

ORDER_CASES = [
    (model, factory_cls, frm, to)
    for model, factory_cls in ((ConversionBatch, BatchFactory), (Payout, PayoutFactory))
    for frm, to in itertools.product(ORDER_STATES, ORDER_STATES)
]


def _order_updates(model: type, to: str) -> dict[str, object]:
    if model is ConversionBatch and to == "completed":
        return {
            "usdt_received": Decimal("29"),
            "usdt_received_raw": Decimal("29"),
            "platform_usdt": Decimal("1"),
            "exchange_dust": Decimal(0),
        }
    return {}


@pytest.mark.django_db
@pytest.mark.parametrize(("model", "factory_cls", "frm", "to"), ORDER_CASES)
def test_it_allows_exactly_the_order_moves_of_the_table(model, factory_cls, frm, to) -> None:
    order = order_in_state(factory_cls, frm)
    before = AuditEvent.objects.count()
    actor = Actor.system("tests")
    if to in model.TRANSITIONS[frm]:
        moved = transition(
            model=model,
            pk=order.pk,
            to_state=to,
            actor=actor,
            reason="table test",
            updates=_order_updates(model, to),
        )
        assert moved.state == to
        event = AuditEvent.objects.latest("id")
        assert (event.from_state, event.to_state, event.actor) == (frm, to, "system:tests")
        assert event.object_id == str(order.pk)
        assert event.reason == "table test"
    else:
        with pytest.raises(TransitionError):
            transition(model=model, pk=order.pk, to_state=to, actor=actor)
        order.refresh_from_db()
        assert order.state == frm
        assert AuditEvent.objects.count() == before


def test_terminal_order_states_have_no_way_out() -> None:
    for model in (ConversionBatch, Payout):
        for state in FundedOrder.TERMINAL:
            assert model.TRANSITIONS[state] == frozenset()


def test_a_batch_cannot_be_funded_without_an_exchange() -> None:
    assert "funds_sent" not in ConversionBatch.TRANSITIONS["reserved"]
    assert "funds_sent" in Payout.TRANSITIONS["reserved"]


def test_failed_is_reachable_only_before_funds_could_have_left() -> None:
    for model in (ConversionBatch, Payout):
        sources = {s for s, targets in model.TRANSITIONS.items() if "failed" in targets}
        assert sources == {"reserved", "exchange_created"}


@pytest.mark.parametrize(("frm", "to"), list(itertools.product(ACC_STATES, ACC_STATES)))
def test_the_accumulation_table_allows_only_the_designed_moves(frm: str, to: str) -> None:
    designed = {
        ("pending", "converting"),
        ("converting", "pending"),
        ("converting", "converted"),
        ("converting", "written_off"),
        ("converted", "paying"),
        ("paying", "converted"),
        ("paying", "paid"),
        ("paying", "written_off"),
    }
    if (frm, to) in designed:
        check_move(Accumulation, frm, to)
    else:
        with pytest.raises(TransitionError):
            check_move(Accumulation, frm, to)


@pytest.mark.django_db
def test_an_accumulation_moves_with_its_links_and_is_audited() -> None:
    acc = AccumulationFactory()
    batch = BatchFactory()
    actor = Actor.system("tests")
    transition(
        model=Accumulation,
        pk=acc.pk,
        to_state="converting",
        actor=actor,
        updates={"batch": batch},
    )
    transition(
        model=Accumulation,
        pk=acc.pk,
        to_state="converted",
        actor=actor,
        updates={"usdt": Decimal("29.1")},
    )
    acc.refresh_from_db()
    assert (acc.state, acc.batch_id, acc.usdt) == ("converted", batch.pk, Decimal("29.1"))
    kinds = list(
        AuditEvent.objects.filter(object_type="accumulation", object_id=str(acc.pk))
        .order_by("id")
        .values_list("from_state", "to_state")
    )
    assert kinds == [("pending", "converting"), ("converting", "converted")]


@pytest.mark.django_db
def test_it_rejects_a_forbidden_accumulation_move_and_changes_nothing() -> None:
    acc = AccumulationFactory()
    with pytest.raises(TransitionError):
        transition(model=Accumulation, pk=acc.pk, to_state="paid", actor=Actor.system("t"))
    acc.refresh_from_db()
    assert acc.state == "pending"
    assert not AuditEvent.objects.filter(object_type="accumulation").exists()


@pytest.mark.django_db
def test_a_move_that_breaks_a_state_rule_is_rolled_back_with_its_audit() -> None:
    acc = AccumulationFactory()
    # converting without a batch violates acc_converting_has_batch in the database
    with pytest.raises(IntegrityError), transaction.atomic():
        transition(model=Accumulation, pk=acc.pk, to_state="converting", actor=Actor.system("t"))
    acc.refresh_from_db()
    assert acc.state == "pending"
    assert not AuditEvent.objects.filter(object_type="accumulation").exists()


@pytest.mark.django_db
def test_it_refuses_an_object_not_in_the_expected_state() -> None:
    batch = order_in_state(BatchFactory, "exchange_created")
    with pytest.raises(TransitionError, match="expected"):
        transition(
            model=ConversionBatch,
            pk=batch.pk,
            to_state="failed",
            actor=Actor.system("t"),
            expect_from={"reserved"},
        )
    batch.refresh_from_db()
    assert batch.state == "exchange_created"


@pytest.mark.django_db
def test_audit_events_cannot_be_changed_or_deleted() -> None:
    batch = BatchFactory()
    transition(model=ConversionBatch, pk=batch.pk, to_state="failed", actor=Actor.system("t"))
    event = AuditEvent.objects.get()
    with pytest.raises(RuntimeError):
        event.save()
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(reason="rewritten")
    with pytest.raises(Exception, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.get().reason == ""
