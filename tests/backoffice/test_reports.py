"""Month-end reports (`manage.py report` and the functions behind the Reports page): fee
income from the ledger, completed payouts with hashes and USD at intake, and a statement
per client that ties to the ledger."""

from __future__ import annotations

import csv
import io
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from backoffice.reports import ReportError, report_build
from ledger.services import balances_get, ledger_post
from payouts.models import Accumulation, Payout, Transfer
from payouts.tasks import sweep_payouts
from tests.conftest import Control
from tests.payouts.test_engine import new_batch, run_to

pytestmark = pytest.mark.django_db
TODAY = timezone.now().astimezone(UTC).date()


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("report", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def paid_out(control: Control) -> dict[str, Payout]:
    batch = new_batch()
    assert run_to("batch", batch.pk, control, {"completed"}) == "completed"
    assert sweep_payouts()["created"] == 2
    for payout in Payout.objects.all():
        assert run_to("payout", payout.pk, control, {"completed"}) == "completed"
    return {p.client.reference: p for p in Payout.objects.select_related("client")}


def test_completed_payouts_list_hashes_client_amounts_and_usd_at_intake(
    providers: Control,
) -> None:
    payouts = paid_out(providers)
    report = report_build(name="payouts", start=TODAY, end=TODAY)
    rows = {r[2]: dict(zip(report.columns, r, strict=True)) for r in report.rows}
    assert set(rows) == {"m0", "m1"}

    direct = rows["m0"]  # USDT on Ethereum: our own ERC-20 transfer is the payment
    transfer = Transfer.objects.get(payout=payouts["m0"])
    assert direct["tx_hash"] == (transfer.mined_hash or transfer.tx_hash)
    assert direct["funding_tx_hash"] == "" and direct["exchange_id"] == ""

    btc = rows["m1"]  # through ChangeNOW: its payout hash, our funding transfer beside it
    exchange = providers.exchange(payouts["m1"].exchange_id)
    assert btc["tx_hash"] == exchange["payoutHash"] and btc["tx_hash"]
    assert btc["funding_tx_hash"] == Transfer.objects.get(payout=payouts["m1"]).mined_hash
    assert btc["amount_in_client_currency"] == payouts["m1"].amount_to
    assert (btc["currency"], btc["network"]) == ("btc", "btc")
    usd = sum(a.usd for a in Accumulation.objects.filter(payout=payouts["m1"]))
    assert btc["usd_at_intake"] == usd > 0

    code, text, _ = run("payouts", "--from", str(TODAY), "--to", str(TODAY), "--csv")
    assert code == 0
    lines = list(csv.DictReader(io.StringIO(text)))
    assert {line["tx_hash"] for line in lines[:2]} == {direct["tx_hash"], btc["tx_hash"]}
    assert lines[-1]["completed_at"] == "2 payouts"  # the totals line
    assert Decimal(lines[-1]["usd_at_intake"]) == direct["usd_at_intake"] + usd


def test_payouts_are_reported_by_completion_time_within_the_range(providers: Control) -> None:
    payouts = paid_out(providers)
    november = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)
    Payout.objects.filter(pk=payouts["m1"].pk).update(completed_at=november)
    in_november = report_build(name="payouts", start=date(2026, 11, 1), end=date(2026, 11, 30))
    assert [r[2] for r in in_november.rows] == ["m1"]
    december = report_build(name="payouts", start=date(2026, 12, 1), end=TODAY)
    assert [r[2] for r in december.rows] == ["m0"]
    only = report_build(name="payouts", start=date(2026, 11, 1), end=TODAY, client="m0")
    assert [r[2] for r in only.rows] == ["m0"]


def test_the_statement_ties_to_the_ledger(providers: Control) -> None:
    paid_out(providers)
    report = report_build(name="statement", start=TODAY, end=TODAY)
    balances = balances_get()
    assert report.rows
    for ref, asset, opening, credits, conversions, payouts, other, closing in report.rows:
        assert opening + credits + conversions + payouts + other == closing
        assert closing == balances[f"clients:{ref}"][asset]
    rows = {(r[0], r[1]): r for r in report.rows}
    eth_in = sum(a.eth for a in Accumulation.objects.filter(client__reference="m1"))
    assert rows[("m1", "eth")][3] == eth_in  # credits
    assert rows[("m1", "eth")][4] == -eth_in  # converted away
    assert rows[("m1", "usdt")][4] == -rows[("m1", "usdt")][5]  # converted, then paid
    before = report_build(name="statement", start=TODAY - timedelta(days=9), end=TODAY)
    assert before.rows == report.rows  # nothing earlier: same figures over a wider range
    later = report_build(
        name="statement", start=TODAY + timedelta(days=1), end=TODAY + timedelta(days=2)
    )
    for _ref, _asset, opening, *_moves, closing in later.rows:
        assert opening == closing  # what was owed at the end of today carries over


def _fee_on(moment: datetime, amount: str) -> None:
    """A fee posting dated `moment`, as books migrated from an older system would be."""
    posted = ledger_post(
        kind="owner_transfer",
        lines=[
            ("platform_fees", "usdt", -Decimal(amount)),
            ("host_wallet", "usdt", Decimal(amount)),
        ],
        actor="system:tests",
        tx_hash="0x" + f"{int(Decimal(amount)):064x}",
    )
    with connection.cursor() as cur:
        cur.execute("SET LOCAL session_replication_role = replica")  # past the append-only rule
        cur.execute(
            "UPDATE ledger_ledgertransaction SET created_at = %s WHERE id = %s", [moment, posted.pk]
        )
        cur.execute("SET LOCAL session_replication_role = origin")


def test_fee_income_per_day_and_month_counts_each_posting_in_its_utc_day() -> None:
    _fee_on(datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC), "1")
    _fee_on(datetime(2026, 11, 1, 0, 0, 0, tzinfo=UTC), "2")
    _fee_on(datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC), "4")
    _fee_on(datetime(2026, 12, 1, 0, 0, 0, tzinfo=UTC), "8")

    by_day = report_build(name="fees", start=date(2026, 11, 1), end=date(2026, 11, 30))
    assert len(by_day.rows) == 30  # every day, zeros included
    assert by_day.rows[0][:2] == ("2026-11-01", Decimal(2))
    assert by_day.rows[-1][:2] == ("2026-11-30", Decimal(4))
    assert by_day.totals is not None and by_day.totals[1] == Decimal(6)

    by_month = report_build(
        name="fees", start=date(2026, 10, 1), end=date(2026, 12, 31), by="month"
    )
    assert [(r[0], r[1]) for r in by_month.rows] == [
        ("2026-10", Decimal(1)),
        ("2026-11", Decimal(6)),
        ("2026-12", Decimal(8)),
    ]
    code, text, _ = run("fees", "--from", "2026-11-01", "--to", "2026-11-30", "--by", "month")
    assert code == 0 and "2026-11" in text and "6" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("fees", "--from", "2026-11-31", "--to", "2026-12-01"), "YYYY-MM-DD"),
        (("fees", "--from", "2026-12-01", "--to", "2026-11-01"), "before the start date"),
        (("fees", "--from", "2020-01-01", "--to", "2026-11-01"), "at most"),
        (("statement", "--from", "2026-11-01", "--to", "2026-11-30", "--client", "nobody"),
         "no client with reference"),
    ],
)  # fmt: skip
def test_a_report_asked_wrongly_says_what_to_change(args: tuple[str, ...], message: str) -> None:
    code, _out, err = run(*args)
    assert code == 1 and message in err


def test_an_unknown_report_is_refused() -> None:
    with pytest.raises(ReportError, match="unknown report"):
        report_build(name="profits", start=TODAY, end=TODAY)
