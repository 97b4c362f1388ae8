"""The conversion sweep: thresholds, fallbacks, switches, concurrency and query count."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import OperationalError, connection, connections, transaction
from django.db.models import Count
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from batches import services
from batches.models import ConversionBatch
from batches.services import batch_sweep
from payouts.models import Accumulation, AuditEvent
from payouts.services import runtime_settings_get, runtime_settings_update
from payouts.transitions import Actor
from tests.factories import AccumulationFactory, ClientFactory

ACTOR = Actor.system("tests")


def set_settings(**changes: object) -> None:
    runtime_settings_update(changes=changes, actor=ACTOR, reason="test")


def pending(n: int, usd: str = "1", eth: str = "0.001", **kw: object) -> list[Accumulation]:
    client = kw.pop("client", None) or ClientFactory()
    return [
        AccumulationFactory(client=client, usd=Decimal(usd), eth=Decimal(eth), **kw)
        for _ in range(n)
    ]


def assert_batch_consistent(batch: ConversionBatch) -> None:
    rows = Accumulation.objects.filter(batch=batch)
    assert rows.count() == batch.row_count
    assert sum(r.eth for r in rows) == batch.eth_total
    assert sum(r.usd for r in rows) == batch.usd_total
    assert all(r.state == "converting" for r in rows)


@pytest.mark.django_db
class TestThreshold:
    def test_it_does_nothing_below_the_threshold(self) -> None:
        pending(19)  # $19 of a $20 threshold
        result = batch_sweep(actor=ACTOR)
        assert (result.created, result.reason, result.rows) == (False, "below_threshold", 19)
        assert not ConversionBatch.objects.exists()
        assert Accumulation.objects.filter(state="pending").count() == 19

    def test_it_sweeps_at_exactly_the_threshold(self) -> None:
        pending(20)
        result = batch_sweep(actor=ACTOR)
        assert result.created and result.reason == "threshold"
        batch = ConversionBatch.objects.get()
        assert (batch.row_count, batch.usd_total, batch.eth_total) == (
            20,
            Decimal(20),
            Decimal("0.02"),
        )
        assert batch.threshold_usd == Decimal(20)
        assert batch.state == "reserved"
        assert_batch_consistent(batch)

    def test_it_sweeps_everything_pending_above_the_threshold(self) -> None:
        pending(30)
        result = batch_sweep(actor=ACTOR)
        assert (result.rows, result.usd) == (30, Decimal(30))
        assert not Accumulation.objects.filter(state="pending").exists()

    def test_it_reads_the_threshold_at_every_run_and_stores_it_on_the_batch(self) -> None:
        pending(30)
        set_settings(conversion_threshold_usd=Decimal(200))
        assert batch_sweep(actor=ACTOR).reason == "below_threshold"
        set_settings(conversion_threshold_usd=Decimal(25))
        assert batch_sweep(actor=ACTOR).created
        assert ConversionBatch.objects.get().threshold_usd == Decimal(25)

    def test_the_batch_creation_is_audited(self) -> None:
        pending(20)
        result = batch_sweep(actor=ACTOR)
        event = AuditEvent.objects.get(object_type="conversionbatch", object_id=result.batch_id)
        assert event.kind == "created" and event.to_state == "reserved"
        assert event.data["rows"] == 20

    def test_a_query_error_fails_the_run_instead_of_reading_as_below_threshold(self) -> None:
        pending(30)
        with connection.cursor() as cur:
            cur.execute("ALTER TABLE payouts_accumulation RENAME COLUMN usd TO usd_gone")
        with pytest.raises(Exception, match="usd"):
            batch_sweep(actor=ACTOR)


@pytest.mark.django_db
class TestFallbacksAndSwitches:
    def test_it_sweeps_old_rows_below_the_threshold_after_the_max_age(self) -> None:
        with time_machine.travel(timezone.now() - timedelta(hours=25), tick=False):
            pending(2)
        result = batch_sweep(actor=ACTOR)
        assert (result.created, result.reason, result.rows) == (True, "max_age", 2)
        assert ConversionBatch.objects.get().trigger == "max_age"

    def test_it_waits_for_young_rows_below_the_threshold(self) -> None:
        with time_machine.travel(timezone.now() - timedelta(hours=23), tick=False):
            pending(2)
        assert batch_sweep(actor=ACTOR).reason == "below_threshold"

    def test_it_does_nothing_while_conversions_are_paused(self) -> None:
        pending(30)
        set_settings(conversions_paused=True)
        result = batch_sweep(actor=ACTOR)
        assert (result.created, result.reason) == (False, "paused")
        assert Accumulation.objects.filter(state="pending").count() == 30

    def test_it_waits_below_the_exchange_minimum(self) -> None:
        pending(30)  # 0.03 ETH
        result = batch_sweep(actor=ACTOR, minimum_eth=Decimal("0.05"))
        assert (result.created, result.reason) == (False, "below_exchange_minimum")
        assert batch_sweep(actor=ACTOR, minimum_eth=Decimal("0.03")).created

    def test_a_dry_run_reports_and_writes_nothing(self) -> None:
        pending(30)
        events = AuditEvent.objects.count()
        result = batch_sweep(actor=ACTOR, dry_run=True)
        assert (result.created, result.rows, result.usd) == (False, 30, Decimal(30))
        assert result.reason == "dry_run:threshold"
        assert not ConversionBatch.objects.exists()
        assert Accumulation.objects.filter(state="pending").count() == 30
        assert AuditEvent.objects.count() == events

    def test_it_reports_nothing_pending(self) -> None:
        assert batch_sweep(actor=ACTOR).reason == "no_pending"

    def test_only_pending_rows_are_swept(self) -> None:
        pending(25)
        batch_sweep(actor=ACTOR)
        pending(25)
        batch_sweep(actor=ACTOR)
        assert ConversionBatch.objects.count() == 2
        for batch in ConversionBatch.objects.all():
            assert batch.row_count == 25
            assert_batch_consistent(batch)


@pytest.mark.django_db
def test_the_sweep_query_count_does_not_grow_with_rows() -> None:
    def queries_for(n: int) -> int:
        pending(n)
        with CaptureQueriesContext(connection) as ctx:
            assert batch_sweep(actor=ACTOR).created
        return len(ctx.captured_queries)

    runtime_settings_get()  # the first read creates the row: not part of a sweep's cost
    assert queries_for(25) == queries_for(1000)


@pytest.mark.django_db(transaction=True)
class TestConcurrency:
    def test_two_simultaneous_sweeps_create_exactly_one_batch(self) -> None:
        pending(200)
        barrier = threading.Barrier(2)
        results = []
        errors: list[BaseException] = []

        def sweep() -> None:
            try:
                barrier.wait()
                results.append(batch_sweep(actor=ACTOR))
            except BaseException as exc:  # noqa: BLE001 - asserted below
                errors.append(exc)
            finally:
                connection.close()

        for _ in range(5):
            threads = [threading.Thread(target=sweep) for _ in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert errors == []
        assert ConversionBatch.objects.count() == 1
        assert sum(r.created for r in results) == 1
        assert {r.reason for r in results if not r.created} <= {"busy", "no_pending"}
        batch = ConversionBatch.objects.get()
        assert batch.row_count == 200
        assert_batch_consistent(batch)

    def test_a_row_locked_elsewhere_fails_the_sweep_loudly_and_changes_nothing(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(services, "SWEEP_ROW_LOCK_TIMEOUT_MS", 300)
        rows = pending(25)
        other = connections.create_connection("default")
        try:
            with other.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute(
                    "SELECT id FROM payouts_accumulation WHERE id = %s FOR UPDATE", [rows[0].pk]
                )
                with pytest.raises(OperationalError, match="lock timeout"):
                    batch_sweep(actor=ACTOR)
                cur.execute("ROLLBACK")
        finally:
            other.close()
        assert not ConversionBatch.objects.exists()
        assert Accumulation.objects.filter(state="pending").count() == 25
        result = batch_sweep(actor=ACTOR)  # the next tick moves everything
        assert result.rows == 25
        assert_batch_consistent(ConversionBatch.objects.get())

    def test_rows_inserted_during_sweeps_are_either_moved_with_their_batch_or_pending(
        self,
    ) -> None:
        client = ClientFactory()
        set_settings(conversion_threshold_usd=Decimal("1"))
        stop = threading.Event()
        inserted: list[int] = []

        def insert() -> None:
            try:
                n = 0
                while not stop.is_set():
                    with transaction.atomic():
                        for _ in range(5):
                            n += 1
                            acc = AccumulationFactory(
                                client=client, payment_id=f"live-{n}", usd=Decimal("0.4")
                            )
                            inserted.append(acc.pk)
            finally:
                connection.close()

        def sweep() -> None:
            try:
                for _ in range(25):
                    batch_sweep(actor=ACTOR)
            finally:
                connection.close()

        writer = threading.Thread(target=insert)
        sweepers = [threading.Thread(target=sweep) for _ in range(2)]
        writer.start()
        for t in sweepers:
            t.start()
        for t in sweepers:
            t.join()
        stop.set()
        writer.join()
        assert len(inserted) > 0
        assert ConversionBatch.objects.exists()
        for batch in ConversionBatch.objects.all():
            assert_batch_consistent(batch)
        states = dict(Accumulation.objects.values_list("state").annotate(n=Count("id")))
        assert sum(states.values()) == len(inserted)
        assert set(states) <= {"pending", "converting"}
        assert not Accumulation.objects.filter(state="pending", batch__isnull=False).exists()
        in_batches = sum(b.row_count for b in ConversionBatch.objects.all())
        assert in_batches + states.get("pending", 0) == len(inserted)
