"""Distribution of a finished batch: exact sums, fairness by ETH, idempotency, query count."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import given, settings
from hypothesis import strategies as st

from batches.models import ConversionBatch
from batches.services import DistributionError, batch_distribute, batch_sweep, split_exact
from payouts.models import Accumulation, AuditEvent
from payouts.services import runtime_settings_get, runtime_settings_update
from payouts.transitions import Actor, transition
from tests.factories import EIP55_ADDRESS, AccumulationFactory, ClientFactory

ACTOR = Actor.system("tests")
WEI = 10**18


def funded_batch(rows: list[tuple[str, str]], usd: str = "100000") -> ConversionBatch:
    """A batch swept from rows of (eth, fee_percent), moved on to `converting`."""
    runtime_settings_update(
        changes={"conversion_threshold_usd": Decimal("0.01")}, actor=ACTOR, reason="test"
    )
    client = ClientFactory()
    for eth, fee in rows:
        AccumulationFactory(client=client, eth=Decimal(eth), fee_percent=Decimal(fee), usd=usd)
    result = batch_sweep(actor=ACTOR)
    assert result.created
    advance_to_converting(result.batch_id)
    return ConversionBatch.objects.get(pk=result.batch_id)


def advance_to_converting(batch_id: object) -> None:
    exchange = {"exchange_id": "cnex-test", "payin_address": EIP55_ADDRESS}
    transition(
        model=ConversionBatch,
        pk=batch_id,
        to_state="exchange_created",
        actor=ACTOR,
        updates=exchange,
    )
    for state in ("funds_sent", "converting"):
        transition(model=ConversionBatch, pk=batch_id, to_state=state, actor=ACTOR)


def shares(batch: ConversionBatch) -> list[Decimal]:
    return list(
        Accumulation.objects.filter(batch=batch).order_by("id").values_list("usdt", flat=True)
    )


def assert_exact(batch: ConversionBatch) -> None:
    batch.refresh_from_db()
    rows = shares(batch)
    assert batch.state == "completed"
    assert all(r is not None and r >= 0 for r in rows)
    assert all(r == r.quantize(Decimal("0.000001")) for r in rows)
    assert sum(rows) + batch.platform_usdt == batch.usdt_received
    assert batch.usdt_received + batch.exchange_dust == batch.usdt_received_raw
    assert not Accumulation.objects.filter(batch=batch).exclude(state="converted").exists()


@pytest.mark.django_db
class TestExactness:
    def test_one_row_gets_all_but_the_fee(self) -> None:
        batch = funded_batch([("0.5", "3")])
        result = batch_distribute(batch_id=batch.pk, amount_to="1500", actor=ACTOR)
        assert result.applied
        assert shares(batch) == [Decimal("1455")]
        assert result.platform_usdt == Decimal("45")
        assert_exact(batch)

    def test_rows_are_weighted_by_the_eth_they_contributed(self) -> None:
        batch = funded_batch([("1", "0"), ("3", "0")])
        batch_distribute(batch_id=batch.pk, amount_to="400", actor=ACTOR)
        assert shares(batch) == [Decimal("100"), Decimal("300")]
        assert_exact(batch)

    def test_one_wei_next_to_a_hundred_eth(self) -> None:
        batch = funded_batch([("0.000000000000000001", "3"), ("100", "3")])
        batch_distribute(batch_id=batch.pk, amount_to="300000.123456", actor=ACTOR)
        tiny, big = shares(batch)
        assert tiny == Decimal(0)  # 1 wei is worth far less than one micro-USDT
        expected_big = Decimal(300000123456 * 100 * WEI * 97 // ((100 * WEI + 1) * 100)) / 10**6
        assert big == expected_big
        assert_exact(batch)

    def test_fee_zero_and_fee_hundred(self) -> None:
        batch = funded_batch([("1", "0"), ("1", "100")])
        result = batch_distribute(batch_id=batch.pk, amount_to="7.000001", actor=ACTOR)
        assert shares(batch) == [Decimal("3.5"), Decimal(0)]
        assert result.platform_usdt == Decimal("3.500001")
        assert_exact(batch)

    def test_an_amount_with_more_than_six_decimals_is_cut_and_the_dust_recorded(self) -> None:
        batch = funded_batch([("1", "3")])
        result = batch_distribute(batch_id=batch.pk, amount_to="99.123456789", actor=ACTOR)
        assert result.usdt_received == Decimal("99.123456")
        assert result.exchange_dust == Decimal("0.000000789")
        assert_exact(batch)

    def test_ten_thousand_rows_sum_exactly(self) -> None:
        runtime_settings_get()
        client = ClientFactory()
        fees = ["0", "1.5", "3", "7.25", "100"]
        Accumulation.objects.bulk_create(
            Accumulation(
                client=client,
                payment_id=f"bulk-{i}",
                eth=Decimal(i % 97 + 1) / Decimal(1000) + Decimal("0.000000000000000007"),
                usd=Decimal("3"),
                fee_percent=Decimal(fees[i % 5]),
            )
            for i in range(10_000)
        )
        batch_sweep(actor=ACTOR)
        batch = ConversionBatch.objects.get()
        advance_to_converting(batch.pk)
        batch_distribute(batch_id=batch.pk, amount_to="28711.3333337", actor=ACTOR)
        assert_exact(batch)
        rows = list(
            Accumulation.objects.filter(batch=batch)
            .order_by("id")
            .values_list("eth", "fee_percent")
        )
        expected = split_exact(
            amount_micro=28711333333,
            rows=[(int(eth * WEI), fee) for eth, fee in rows],
        )
        assert [int(s * 10**6) for s in shares(batch)] == expected

    def test_it_is_deterministic(self) -> None:
        rows = [("0.3", "3"), ("0.3", "3"), ("0.4", "2.5")]
        first = funded_batch(rows)
        batch_distribute(batch_id=first.pk, amount_to="1000.000001", actor=ACTOR)
        second = funded_batch(rows)
        batch_distribute(batch_id=second.pk, amount_to="1000.000001", actor=ACTOR)
        assert shares(first) == shares(second)


@pytest.mark.django_db
class TestOnceAndSafe:
    def test_a_second_call_is_a_no_op(self) -> None:
        batch = funded_batch([("1", "3"), ("2", "3")])
        batch_distribute(batch_id=batch.pk, amount_to="300", actor=ACTOR)
        before = shares(batch)
        events = AuditEvent.objects.count()
        again = batch_distribute(batch_id=batch.pk, amount_to="999", actor=ACTOR)
        assert not again.applied
        assert again.usdt_received == Decimal("300")
        assert shares(batch) == before
        assert AuditEvent.objects.count() == events

    @pytest.mark.parametrize("amount", ["0", "-1", "NaN", "Infinity", "abc", 1.5])
    def test_it_rejects_a_bad_amount(self, amount: object) -> None:
        batch = funded_batch([("1", "3")])
        with pytest.raises(DistributionError):
            batch_distribute(batch_id=batch.pk, amount_to=amount, actor=ACTOR)
        batch.refresh_from_db()
        assert batch.state == "converting"
        assert shares(batch) == [None]

    def test_it_refuses_an_implausible_amount(self) -> None:
        batch = funded_batch([("1", "3")], usd="3000")
        with pytest.raises(DistributionError, match="implausible"):
            batch_distribute(batch_id=batch.pk, amount_to="11400000", actor=ACTOR)
        batch.refresh_from_db()
        assert batch.state == "converting"

    def test_it_refuses_a_batch_that_was_never_funded(self) -> None:
        runtime_settings_update(
            changes={"conversion_threshold_usd": Decimal("0.01")}, actor=ACTOR, reason="test"
        )
        AccumulationFactory()
        result = batch_sweep(actor=ACTOR)
        with pytest.raises(Exception, match="not allowed"):
            batch_distribute(batch_id=result.batch_id, amount_to="30", actor=ACTOR)
        assert Accumulation.objects.get().state == "converting"

    def test_the_completion_is_audited_with_the_split(self) -> None:
        batch = funded_batch([("1", "3")])
        batch_distribute(batch_id=batch.pk, amount_to="100", actor=ACTOR)
        event = AuditEvent.objects.filter(object_id=str(batch.pk), to_state="completed").get()
        assert Decimal(event.data["platform_usdt"]) == Decimal("3")
        assert Decimal(event.data["clients_usdt"]) == Decimal("97")


@pytest.mark.django_db
def test_the_distribution_query_count_does_not_grow_with_rows() -> None:
    def queries_for(n: int) -> int:
        batch = funded_batch([("0.01", "3")] * n)
        with CaptureQueriesContext(connection) as ctx:
            batch_distribute(batch_id=batch.pk, amount_to="123.45", actor=ACTOR)
        return len(ctx.captured_queries)

    assert queries_for(3) == queries_for(500)


rows_strategy = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=10_000 * WEI),
        st.decimals(min_value=0, max_value=100, places=4),
    ),
    min_size=1,
    max_size=40,
)


@given(amount_micro=st.integers(min_value=0, max_value=10**15), rows=rows_strategy)
@settings(max_examples=400, deadline=None)
def test_the_split_never_creates_or_loses_a_unit(amount_micro: int, rows) -> None:  # noqa: ANN001
    result = split_exact(amount_micro=amount_micro, rows=rows)
    total_wei = sum(w for w, _ in rows)
    assert all(s >= 0 for s in result)
    assert sum(result) <= amount_micro
    platform = amount_micro - sum(result)
    # each share is the floor of the exact share, so the platform keeps at least the fees
    exact_fee = Fraction(
        sum(amount_micro * w * int(fee * 10_000) for w, fee in rows), total_wei * 1_000_000
    )
    assert platform >= exact_fee
    assert platform - exact_fee < len(rows)
    # weighting: with equal fees, more ETH never gets less
    for (w1, f1), s1 in zip(rows, result, strict=True):
        for (w2, f2), s2 in zip(rows, result, strict=True):
            if f1 == f2 and w1 >= w2:
                assert s1 >= s2


@pytest.mark.django_db
@given(
    amount=st.decimals(min_value=Decimal("0.000001"), max_value=Decimal("1000000"), places=9),
    rows=st.lists(
        st.tuples(
            st.decimals(min_value=Decimal("1E-18"), max_value=Decimal("50"), places=18),
            st.sampled_from(["0", "2.5", "3", "99.9999", "100"]),
        ),
        min_size=1,
        max_size=8,
    ),
)
@settings(max_examples=40, deadline=None)
def test_the_database_split_matches_the_reference_and_sums_exactly(amount, rows) -> None:  # noqa: ANN001
    # Each example in a savepoint rolled back: the ledger is append-only, nothing is deleted.
    sid = transaction.savepoint()
    batch = funded_batch([(str(eth), fee) for eth, fee in rows], usd="1000000")
    result = batch_distribute(batch_id=batch.pk, amount_to=amount, actor=ACTOR)
    assert_exact(batch)
    expected = split_exact(
        amount_micro=int(result.usdt_received * 10**6),
        rows=[(int(eth * WEI), Decimal(fee)) for eth, fee in rows],
    )
    assert [int(s * 10**6) for s in shares(batch)] == expected
    transaction.savepoint_rollback(sid)


@pytest.mark.django_db
def test_a_completed_batch_starts_no_payout_sweep_the_payout_schedule_decides(
    settings: object, django_capture_on_commit_callbacks: object
) -> None:
    """One payout per client per payout interval, not one per batch: completing a batch
    queues nothing for the payout sweep (its schedule runs it)."""
    from batches.kinds import BatchKind

    settings.ENGINE_ENQUEUE_FOLLOWUPS = True  # type: ignore[attr-defined]
    batch = funded_batch([("0.01", "3"), ("0.02", "3")])
    with django_capture_on_commit_callbacks(execute=False) as callbacks:  # type: ignore[operator]
        BatchKind().complete(order_id=batch.pk, amount_to=Decimal("90"), actor=ACTOR)
    assert_exact(batch)
    assert callbacks == []
