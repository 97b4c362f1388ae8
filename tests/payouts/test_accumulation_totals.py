"""The kept totals per accumulation state: written by the table's triggers for every
statement, folded without losing or doubling a delta beside concurrent writers, never
holding up intake, and checked by reconcile against the rows."""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.db.models import Count, Sum
from django.db.models.functions import Coalesce

from backoffice.reconcile import reconcile_breaches
from payouts.models import Accumulation, AccumulationTotal
from payouts.totals import (
    _COMPACT_SQL,
    StateTotal,
    accumulation_totals,
    accumulation_totals_compact,
    accumulation_totals_rebuild,
)
from tests.factories import AccumulationFactory, BatchFactory, ClientFactory, PayoutFactory

TOTALS_INVARIANT = "totals: kept per state equal the rows"


def live() -> dict[str, StateTotal]:
    """The totals as the rows themselves give them."""
    rows = (
        Accumulation.objects.values("state")
        .annotate(
            n=Count("id"),
            e=Sum("eth"),
            u=Sum("usd"),
            t=Coalesce(Sum("usdt"), Decimal(0)),
        )
        .order_by()
    )
    return {r["state"]: StateTotal(r["n"], r["e"], r["u"], r["t"]) for r in rows}


def kept() -> dict[str, StateTotal]:
    return {s: t for s, t in accumulation_totals().items() if t.count or t.eth or t.usdt}


@pytest.mark.django_db
class TestTheTriggersKeepTheTotals:
    def test_it_counts_each_insert_update_and_delete_by_state(self) -> None:
        client = ClientFactory()
        rows = AccumulationFactory.create_batch(6, client=client, eth=Decimal("0.013"))
        AccumulationFactory(client=client, eth=Decimal("0.5"), usd=Decimal("1500.25"))
        assert kept() == live()
        assert kept()["pending"].count == 7

        batch = BatchFactory(state="converting", row_count=6)
        ids = [r.pk for r in rows]
        Accumulation.objects.filter(pk__in=ids).update(state="converting", batch=batch)
        # The rows' own constraints are all this needs; the orders' states do not matter.
        Accumulation.objects.filter(pk__in=ids[:4]).update(
            state="converted", usdt=Decimal("38.123456")
        )
        payout = PayoutFactory(client=client)
        Accumulation.objects.filter(pk__in=ids[:2]).update(state="paid", payout=payout)
        Accumulation.objects.filter(pk=ids[5]).update(state="written_off")
        assert kept() == live()
        assert kept()["paid"] == StateTotal(2, Decimal("0.026"), Decimal(60), Decimal("76.246912"))

    def test_it_appends_nothing_for_an_update_that_moves_no_money(self) -> None:
        AccumulationFactory.create_batch(3)
        before = AccumulationTotal.objects.count()
        Accumulation.objects.update(order_id="INV-1", releases=1)
        assert AccumulationTotal.objects.count() == before

    def test_a_bulk_move_adds_one_delta_per_state_it_touched(self) -> None:
        AccumulationFactory.create_batch(40)
        before = AccumulationTotal.objects.count()
        batch = BatchFactory(state="converting", row_count=40)
        Accumulation.objects.update(state="converting", batch=batch)
        assert AccumulationTotal.objects.count() == before + 2
        assert kept()["converting"].count == 40 and "pending" not in kept()

    def test_the_oldest_pending_payment_comes_with_the_totals(self) -> None:
        first = AccumulationFactory()
        AccumulationFactory()
        assert accumulation_totals()["pending"].oldest == first.created_at


@pytest.mark.django_db
class TestFolding:
    def test_it_folds_the_deltas_into_one_row_per_state_and_keeps_the_sums(self) -> None:
        rows = [AccumulationFactory() for _ in range(5)]
        batch = BatchFactory(state="converting", row_count=2)
        Accumulation.objects.filter(pk__in=[rows[0].pk, rows[1].pk]).update(
            state="converting", batch=batch
        )
        before = kept()
        deltas = AccumulationTotal.objects.count()
        assert accumulation_totals_compact() == {"folded": deltas, "kept": 2, "skipped": 0}
        assert sorted(AccumulationTotal.objects.values_list("state", flat=True)) == [
            "converting",
            "pending",
        ]
        assert kept() == before

    def test_a_state_that_nets_to_nothing_leaves_no_row(self) -> None:
        rows = AccumulationFactory.create_batch(2)
        batch = BatchFactory(state="converting", row_count=2)
        Accumulation.objects.filter(pk__in=[r.pk for r in rows]).update(
            state="converting", batch=batch
        )
        accumulation_totals_compact()
        assert list(AccumulationTotal.objects.values_list("state", flat=True)) == ["converting"]

    def test_the_watchdog_folds_them(self) -> None:
        from backoffice.operations import watchdog_run

        AccumulationFactory.create_batch(3)
        result = watchdog_run(wallet_balances=lambda: (Decimal(100), Decimal(100000)))
        assert result["totals_folded"] == 3
        assert AccumulationTotal.objects.count() == 1


def in_thread(work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run `work` on its own database connection; its result or error lands in the dict."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = work()
        except Exception as exc:  # the test asserts on it
            out["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def fold_held_open() -> tuple[threading.Thread, dict[str, Any], threading.Event]:
    """A fold done but not committed on its own connection, until the event is set."""
    folded = threading.Event()
    release = threading.Event()

    def fold() -> dict[str, int]:
        with transaction.atomic():
            result = accumulation_totals_compact()
            folded.set()
            release.wait(10)
        return result

    thread, out = in_thread(fold)
    assert folded.wait(10)
    return thread, out, release


@pytest.mark.django_db(transaction=True)
class TestBesideConcurrentWriters:
    def test_intake_is_not_held_up_by_an_open_bulk_move(self) -> None:
        client = ClientFactory()
        AccumulationFactory.create_batch(20, client=client)
        batch = BatchFactory(state="converting", row_count=20)
        moved = threading.Event()
        release = threading.Event()

        def sweep() -> int:
            with transaction.atomic():
                n = Accumulation.objects.filter(state="pending").update(
                    state="converting", batch=batch
                )
                moved.set()
                release.wait(10)
            return n

        thread, out = in_thread(sweep)
        assert moved.wait(10)
        # A payment credited while the sweep's transaction is open: a shared counter row
        # would make it wait for the sweep's commit; the deltas do not.
        with transaction.atomic(), connection.cursor() as cur:
            cur.execute("SET LOCAL lock_timeout = '2s'")
            AccumulationFactory(client=client)
        release.set()
        thread.join(10)
        assert out == {"result": 20}
        assert kept() == live()
        assert kept()["pending"].count == 1 and kept()["converting"].count == 20

    def test_a_fold_loses_no_delta_written_while_it_runs(self) -> None:
        client = ClientFactory()
        AccumulationFactory.create_batch(5, client=client)
        thread, out, release = fold_held_open()
        AccumulationFactory.create_batch(3, client=client)  # commits before the fold does
        release.set()
        thread.join(10)
        assert out["result"]["folded"] == 5
        assert kept()["pending"].count == 8
        assert kept() == live()

    def test_two_folds_at_once_never_count_a_delta_twice(self) -> None:
        AccumulationFactory.create_batch(4)

        def raw_fold() -> int:
            # The second fold without the lock that would make it step aside: it waits on
            # the first one's deleted rows and then skips them.
            with transaction.atomic(), connection.cursor() as cur:
                cur.execute(_COMPACT_SQL)
                return int(cur.fetchone()[0])

        first, _, release = fold_held_open()
        second, out = in_thread(raw_fold)
        second.join(0.5)
        assert second.is_alive(), "the second fold should wait for the first one's rows"
        release.set()
        first.join(10)
        second.join(10)
        assert out == {"result": 0}
        assert kept()["pending"].count == 4
        assert AccumulationTotal.objects.count() == 1

    def test_a_second_fold_steps_aside_while_one_runs(self) -> None:
        AccumulationFactory.create_batch(2)
        first, _, release = fold_held_open()
        try:
            assert accumulation_totals_compact() == {"folded": 0, "kept": 0, "skipped": 1}
        finally:
            release.set()
            first.join(10)

    def test_a_truncate_empties_the_totals(self) -> None:
        AccumulationFactory.create_batch(2)
        with connection.cursor() as cur:
            cur.execute("TRUNCATE payouts_accumulation CASCADE")
        assert AccumulationTotal.objects.count() == 0


@pytest.mark.django_db
class TestReconcileChecksThem:
    def test_it_is_clean_while_the_triggers_keep_them(self) -> None:
        AccumulationFactory.create_batch(3)
        accumulation_totals_compact()
        assert [b for b in reconcile_breaches() if b.invariant == TOTALS_INVARIANT] == []

    def test_it_reports_a_forged_delta(self) -> None:
        AccumulationFactory.create_batch(3)
        AccumulationTotal.objects.create(
            state="paid", row_count=1, eth=Decimal("0.01"), usd=Decimal(30), usdt=Decimal(29)
        )
        found = [b for b in reconcile_breaches() if b.invariant == TOTALS_INVARIANT]
        assert [b.object for b in found] == ["accumulation_totals:paid"]
        assert "kept 1 rows" in found[0].detail and "hold 0 rows" in found[0].detail


def set_trigger(name: str, *, enabled: bool) -> None:
    with connection.cursor() as cur:
        action = "ENABLE" if enabled else "DISABLE"
        cur.execute(f"ALTER TABLE payouts_accumulation {action} TRIGGER {name}")


# ALTER TABLE refuses to run with trigger events queued in the transaction: these tests
# commit as they go.
@pytest.mark.django_db(transaction=True)
class TestBehindTheTriggers:
    def test_a_delete_takes_the_rows_out(self) -> None:
        client = ClientFactory()
        set_trigger("ledger_intake", enabled=False)  # no posting, so the rows can go
        try:
            AccumulationFactory(client=client, usd=Decimal(10))
            AccumulationFactory(client=client, usd=Decimal(15))
            assert kept()["pending"].usd == Decimal(25)
            Accumulation.objects.filter(usd=Decimal(10)).delete()
        finally:
            set_trigger("ledger_intake", enabled=True)
        assert kept() == live()
        assert kept()["pending"].count == 1

    def test_reconcile_reports_a_move_made_behind_the_triggers(self) -> None:
        rows = AccumulationFactory.create_batch(2, usd=Decimal("30"))
        set_trigger("payouts_acc_totals_update", enabled=False)
        try:
            Accumulation.objects.filter(pk=rows[0].pk).update(usd=Decimal(31))
        finally:
            set_trigger("payouts_acc_totals_update", enabled=True)
        found = [b for b in reconcile_breaches() if b.invariant == TOTALS_INVARIANT]
        assert [b.object for b in found] == ["accumulation_totals:pending"]
        assert "60.0" in found[0].detail and "61.0" in found[0].detail


@pytest.mark.django_db(transaction=True)
def test_the_migration_fills_the_totals_from_the_rows_already_there() -> None:
    from tests.payouts.test_destination_migration import migrate_payouts

    migrate_payouts("0008_written_off_index")
    try:
        client = ClientFactory()
        AccumulationFactory.create_batch(3, client=client, usd=Decimal("12.5"))
        batch = BatchFactory(state="converting", row_count=1)
        Accumulation.objects.filter(pk=Accumulation.objects.first().pk).update(
            state="converting", batch=batch
        )
    finally:
        migrate_payouts(None)
    assert kept() == live()
    assert kept()["pending"].usd == Decimal(25)
    assert [b for b in reconcile_breaches() if b.invariant == TOTALS_INVARIANT] == []


@pytest.mark.django_db
class TestRebuild:
    def test_it_recounts_drifted_totals_from_the_rows_with_an_audit_event(self) -> None:
        import io
        import json

        from django.core.management import call_command

        from payouts.models import AuditEvent

        AccumulationFactory.create_batch(2, usd=Decimal(30))
        AccumulationTotal.objects.create(
            state="paid", row_count=1, eth=Decimal("0.01"), usd=Decimal(30), usdt=Decimal(29)
        )
        assert [b.object for b in reconcile_breaches() if b.invariant == TOTALS_INVARIANT]
        out = io.StringIO()
        call_command("rebuild_totals", "--reason", "drift", "--json", stdout=out)
        result = json.loads(out.getvalue())
        assert result["changed"] == ["paid"]
        assert result["totals"]["pending"] == {
            "count": 2,
            "eth": "0.02",
            "usd": "60",
            "usdt": "0",
        }
        assert result["totals"]["paid"] == {"count": 0, "eth": "0", "usd": "0", "usdt": "0"}
        assert [b for b in reconcile_breaches() if b.invariant == TOTALS_INVARIANT] == []
        event = AuditEvent.objects.get(kind="totals_rebuilt")
        assert event.reason == "drift" and event.actor.startswith("system:manage.py rebuild_totals")
        assert event.data["before"]["paid"]["count"] == 1
        assert event.data["after"]["paid"]["count"] == 0

    def test_it_refuses_without_a_reason_and_changes_nothing(self) -> None:
        from payouts.transitions import Actor

        AccumulationFactory()
        AccumulationTotal.objects.create(
            state="paid", row_count=1, eth=Decimal(1), usd=Decimal(1), usdt=Decimal(1)
        )
        with pytest.raises(ValueError, match="reason"):
            accumulation_totals_rebuild(actor=Actor.system("test"), reason="  ")
        assert kept()["paid"].count == 1
