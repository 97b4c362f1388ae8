"""The payout sweep against ChangeNOW's range for each pair (sandbox over HTTP): payouts
split under the maximum, amounts re-checked as they grow, and the reason a client is not
paid kept on the client."""

from __future__ import annotations

from decimal import Decimal

import pytest

from backoffice.reconcile import reconcile_run
from payouts.currencies import currency_catalogue_refresh
from payouts.models import Accumulation, ApprovalRequest, Client, Payout
from payouts.services import runtime_settings_update
from payouts.tasks import sweep_payouts
from payouts.transitions import Actor
from tests.conftest import Control
from tests.factories import ClientFactory
from tests.payouts.test_engine import BTC, credit, run_to, step

pytestmark = pytest.mark.django_db
ACTOR = Actor.system("tests")


def btc_client(reference: str = "books", threshold: str = "10") -> Client:
    return ClientFactory(
        reference=reference,
        payout_currency="btc",
        payout_network="btc",
        payout_address=BTC,
        payout_threshold_usd=Decimal(threshold),
    )


def converted(control: Control, reference: str, payments: int, tag: str = "") -> list[Decimal]:
    """Credit `payments` of 0.005 ETH, convert them; returns the client's converted USDT rows."""
    from batches.tasks import conversion_sweep

    credit(reference, payments, eth=f"0.005{tag}", usd="25")
    result = conversion_sweep(actor=ACTOR)
    assert result.created, result
    for batch in result.batches:
        assert run_to("batch", batch.batch_id, control, {"completed", "failed"}) == "completed"
    return list(
        Accumulation.objects.filter(client__reference=reference, state="converted")
        .order_by("created_at", "id")
        .values_list("usdt", flat=True)
    )


def test_a_payout_of_three_times_the_maximum_becomes_three_payouts_that_all_complete(
    providers: Control,
) -> None:
    btc_client()
    rows = converted(providers, "books", 6)
    maximum = rows[0] + rows[1]  # every row has the same share: two rows per payout
    assert sum(rows) == 3 * maximum
    providers.config(max_amounts={"usdt": str(maximum)})

    result = sweep_payouts()

    assert result["created"] == 3, result
    payouts = list(Payout.objects.filter(client__reference="books"))
    assert sorted(p.usdt_amount for p in payouts) == [maximum] * 3
    assert {p.split_total_usdt for p in payouts} == {sum(rows)}
    client = Client.objects.get(reference="books")
    assert client.unpaid_code == "split" and "split into 3 payouts" in client.unpaid_reason
    for payout in payouts:
        assert run_to("payout", payout.pk, providers, {"completed", "failed"}) == "completed"
    assert set(Accumulation.objects.values_list("state", flat=True)) == {"paid"}
    assert reconcile_run() == {"ok": True, "breaches": []}
    client.refresh_from_db()
    sweep_payouts()  # nothing converted is left: the reason is cleared
    client.refresh_from_db()
    assert (client.unpaid_code, client.unpaid_reason, client.unpaid_since) == ("", "", None)


def test_a_client_below_the_minimum_is_paid_once_its_balance_grows_with_no_edit(
    providers: Control,
) -> None:
    btc_client()
    first = converted(providers, "books", 1)
    providers.config(min_amounts={"usdt": "20"})
    result = sweep_payouts()
    assert result["created"] == 0
    assert result["skipped"] == [{"client": "books", "reason": "below_exchange_minimum:20"}]
    client = Client.objects.get(reference="books")
    assert client.unpaid_code == "below_minimum"
    assert "below the exchange minimum of 20" in client.unpaid_reason
    assert client.unpaid_since is not None

    waiting = converted(providers, "books", 1, tag="1")  # another payment, another batch
    assert len(waiting) == 2 and waiting[0] == first[0]
    result = sweep_payouts()
    assert result["created"] == 1, result
    payout = Payout.objects.get(client__reference="books")
    assert payout.usdt_amount == sum(waiting) >= 20
    assert run_to("payout", payout.pk, providers, {"completed", "failed"}) == "completed"
    assert reconcile_run()["ok"]


def test_an_amount_refusal_is_rechecked_at_the_next_sweep_not_taken_as_a_bad_destination(
    providers: Control,
) -> None:
    btc_client()
    converted(providers, "books", 2)
    sweep_payouts()
    payout = Payout.objects.get(client__reference="books")
    providers.fail(
        path="/v2/exchange", method="POST", status=400, error="out_of_range", message="too big"
    )
    step("payout", payout.pk)
    payout.refresh_from_db()
    assert (payout.state, payout.last_error_code) == ("failed", "out_of_range")
    assert Accumulation.objects.filter(state="converted").count() == 2  # released
    result = sweep_payouts()
    assert result["created"] == 1, result  # not "last_payout_refused"
    again = Payout.objects.exclude(pk=payout.pk).get()
    assert run_to("payout", again.pk, providers, {"completed", "failed"}) == "completed"
    assert reconcile_run()["ok"]


def test_a_single_payment_above_the_maximum_waits_for_a_person_with_the_reason(
    providers: Control,
) -> None:
    btc_client()
    rows = converted(providers, "books", 2)
    providers.config(max_amounts={"usdt": str(rows[0] - Decimal("0.5"))})
    result = sweep_payouts()
    assert result["created"] == 0
    assert result["skipped"][0]["reason"].startswith("above_exchange_maximum:")
    client = Client.objects.get(reference="books")
    assert client.unpaid_code == "above_maximum" and "a person decides" in client.unpaid_reason


def test_each_reason_a_client_is_not_paid_is_kept_on_the_client(providers: Control) -> None:
    btc_client("small", threshold="1000")
    btc_client("gone")
    btc_client("refused")
    for reference in ("small", "gone", "refused"):
        credit(reference, 1, eth="0.005", usd="15")
    from batches.tasks import conversion_sweep

    batch = conversion_sweep(actor=ACTOR)
    assert run_to("batch", batch.batch_id, providers, {"completed"}) == "completed"

    runtime_settings_update(changes={"payouts_paused": True}, actor=ACTOR, reason="incident")
    sweep_payouts()
    assert set(Client.objects.values_list("unpaid_code", flat=True)) == {"paused"}
    runtime_settings_update(changes={"payouts_paused": False}, actor=ACTOR, reason="over")

    providers.config(inactive_currencies=["btc"])
    currency_catalogue_refresh(actor=ACTOR)  # ChangeNOW stopped offering btc
    sweep_payouts()
    gone = Client.objects.get(reference="gone")
    assert gone.unpaid_code == "currency_inactive"
    assert "no longer offers btc on btc" in gone.unpaid_reason
    providers.config(inactive_currencies=[])
    currency_catalogue_refresh(actor=ACTOR)

    sweep_payouts()
    refused = Payout.objects.get(client__reference="refused")
    providers.fail(
        path="/v2/exchange",
        method="POST",
        status=400,
        error="not_valid_address",
        message="Invalid address: checksum mismatch",
    )
    step("payout", refused.pk)
    sweep_payouts()
    reasons = dict(Client.objects.values_list("reference", "unpaid_code"))
    assert reasons["small"] == "below_threshold"
    assert reasons["refused"] == "destination_refused"
    refused_client = Client.objects.get(reference="refused")
    assert "checksum mismatch" in refused_client.unpaid_reason
    small = Client.objects.get(reference="small")
    assert "below its payout threshold of 1000" in small.unpaid_reason


def test_splitting_never_takes_a_sum_below_the_dual_control_limit(providers: Control) -> None:
    btc_client()
    rows = converted(providers, "books", 6)
    maximum = rows[0] + rows[1]
    providers.config(max_amounts={"usdt": str(maximum)})
    # Each part is below the limit, the whole is above it: every part waits for approval.
    runtime_settings_update(
        changes={"dual_control_over_usdt": maximum + 1}, actor=ACTOR, reason="policy"
    )
    assert sweep_payouts()["created"] == 3
    for payout in Payout.objects.all():
        step("payout", payout.pk)
        payout.refresh_from_db()
        assert payout.state == "reserved"
    held = ApprovalRequest.objects.filter(action="release_payout", state="pending")
    assert held.count() == 3
    assert all("split under ChangeNOW's maximum" in r.reason for r in held)
