"""The conversion sweep sized to ChangeNOW's eth->usdt range, against the sandbox over HTTP:
split into batches within [min, max], oldest rows first, set-based, each batch completing
with an exact distribution."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from backoffice.models import Alert
from backoffice.reconcile import reconcile_run
from batches.models import ConversionBatch
from batches.services import batch_sweep
from batches.tasks import conversion_sweep
from payouts.models import Accumulation
from payouts.transitions import Actor
from tests.conftest import Control
from tests.factories import AccumulationFactory, ClientFactory
from tests.payouts.test_engine import credit, run_to

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("tests")


def test_a_backlog_above_the_maximum_becomes_batches_within_range_that_all_complete(
    providers: Control,
) -> None:
    providers.config(max_amounts={"eth": "0.01"})
    ClientFactory(reference="shop", instant=True)
    ClientFactory(reference="books", instant=True)
    credit("shop", 5, eth="0.0025", usd="7.5")
    credit("books", 5, eth="0.0025", usd="7.5")  # 0.025 ETH pending against a 0.01 maximum

    result = conversion_sweep(actor=ACTOR)

    assert result.created
    assert [b.eth for b in result.batches] == [Decimal("0.01"), Decimal("0.01"), Decimal("0.005")]
    assert result.batch_id == result.batches[0].batch_id
    assert not Accumulation.objects.filter(state="pending").exists()
    batches = [ConversionBatch.objects.get(pk=b.batch_id) for b in result.batches]
    # Oldest first: every row of an earlier batch was credited before those of a later one.
    newest_of_first = max(a.created_at for a in Accumulation.objects.filter(batch=batches[0]))
    oldest_of_last = min(a.created_at for a in Accumulation.objects.filter(batch=batches[2]))
    assert newest_of_first <= oldest_of_last
    for batch in batches:
        assert run_to("batch", batch.pk, providers, {"completed", "failed"}) == "completed"
        batch.refresh_from_db()
        rows = Accumulation.objects.filter(batch=batch)
        assert batch.eth_total <= Decimal("0.01")
        assert sum(r.eth for r in rows) == batch.eth_total
        assert sum(r.usdt for r in rows) + batch.platform_usdt == batch.usdt_received
    refused = [d for d in providers.state()["deposits"] if d["note"]]
    assert not refused
    assert reconcile_run() == {"ok": True, "breaches": []}


def test_the_sweep_json_lists_every_batch_it_created(providers: Control) -> None:
    providers.config(max_amounts={"eth": "0.01"})
    ClientFactory(reference="shop", instant=True)
    credit("shop", 8, eth="0.0025", usd="7.5")
    out = io.StringIO()
    call_command("sweep", "--json", stdout=out)
    answer = json.loads(out.getvalue())
    assert [b["eth"] for b in answer["batches"]] == ["0.01", "0.01"]
    assert [b["rows"] for b in answer["batches"]] == [4, 4]
    assert answer["batch_id"] == answer["batches"][0]["batch_id"]
    assert (answer["rows"], answer["eth"]) == (4, "0.01")


def test_a_remainder_below_the_minimum_waits_and_the_next_sweep_takes_it(
    providers: Control,
) -> None:
    providers.config(max_amounts={"eth": "0.01"}, min_amounts={"eth": "0.004"})
    ClientFactory(reference="shop", instant=True)
    credit("shop", 9, eth="0.0025", usd="7.5")  # 0.0225: 0.01 + 0.01 + 0.0025 (below 0.004)
    first = conversion_sweep(actor=ACTOR)
    assert [b.eth for b in first.batches] == [Decimal("0.01"), Decimal("0.01")]
    assert Accumulation.objects.filter(state="pending").count() == 1
    ClientFactory(reference="late", instant=True)
    credit("late", 1, eth="0.0025", usd="30")  # the two pending rows reach the threshold
    second = batch_sweep(actor=ACTOR, minimum_eth=Decimal("0.004"), maximum_eth=Decimal("0.01"))
    assert [b.eth for b in second.batches] == [Decimal("0.005")]


def test_a_payment_above_the_maximum_stays_pending_and_raises_an_alert() -> None:
    client = ClientFactory()
    AccumulationFactory(client=client, eth=Decimal("0.5"), usd=Decimal("1500"))
    for _ in range(3):
        AccumulationFactory(client=client, eth=Decimal("0.004"), usd=Decimal("12"))
    result = batch_sweep(actor=ACTOR, minimum_eth=Decimal("0.001"), maximum_eth=Decimal("0.01"))
    assert [b.eth for b in result.batches] == [Decimal("0.008"), Decimal("0.004")]
    left = Accumulation.objects.get(state="pending")
    assert left.eth == Decimal("0.5")
    alert = Alert.objects.get(kind="above_exchange_maximum")
    assert "0.5 ETH" in alert.message and "0.01 ETH" in alert.message


def test_splitting_takes_a_fixed_number_of_statements_per_batch_whatever_the_rows() -> None:
    def queries(rows: int) -> tuple[int, int]:
        client = ClientFactory()
        each = Decimal("0.03") / rows
        for _ in range(rows):
            AccumulationFactory(client=client, eth=each, usd=Decimal("100") / rows)
        with CaptureQueriesContext(connection) as ctx:
            result = batch_sweep(
                actor=ACTOR, minimum_eth=Decimal("0.001"), maximum_eth=Decimal("0.01")
            )
        Accumulation.objects.filter(state="converting").update(state="written_off")
        return len(result.batches), len(ctx.captured_queries)

    queries(6)  # first run: the settings row and such are created once
    few = queries(6)
    many = queries(300)
    assert few[0] == many[0] == 3
    assert few[1] == many[1]


def test_a_batch_refused_as_out_of_range_is_resized_at_the_next_sweep_and_alerts(
    providers: Control,
) -> None:
    ClientFactory(reference="shop", instant=True)
    credit("shop", 4, eth="0.005", usd="15")
    first = conversion_sweep(actor=ACTOR)  # read with no maximum: one batch of 0.02
    assert [b.eth for b in first.batches] == [Decimal("0.02")]
    providers.config(max_amounts={"eth": "0.01"})  # ChangeNOW lowers its maximum meanwhile
    # The engine's cached range still says "no maximum": ChangeNOW refuses the create.
    assert run_to("batch", first.batch_id, providers, {"failed"}, limit=3) == "failed"
    batch = ConversionBatch.objects.get(pk=first.batch_id)
    assert batch.last_error_code == "out_of_range"
    assert Alert.objects.filter(kind="amount_refused").exists()
    assert Accumulation.objects.filter(state="pending").count() == 4  # released, no deposit
    again = conversion_sweep(actor=ACTOR)  # the refusal dropped the cached range
    assert [b.eth for b in again.batches] == [Decimal("0.01"), Decimal("0.01")]
    for swept in again.batches:
        assert run_to("batch", swept.batch_id, providers, {"completed", "failed"}) == "completed"
    assert reconcile_run() == {"ok": True, "breaches": []}
