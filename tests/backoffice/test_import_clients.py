"""`manage.py import_clients FILE.csv`: every line validated; any error imports nothing."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command

from payouts.models import AuditEvent, Client

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalogue")]

HEADER = (
    "reference,name,payout_strategy,payout_threshold_usd,payout_currency,payout_network,"
    "payout_address,payout_extra_id,fee_percent\n"
)
ETH = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
BTC = "bc1qar0srrr7xfkvy5l643lydnw9re59gtzzwf5mdq"
XMR = (
    "44AFFq5kSiGBoZ4NMDwYtN18obc8AemS33DBLWs3H7otXft3XjrpDtQGv7SqSsaBYBb98uNbr2VBBEt7f2wf"
    "n3RVGQBEP3A"
)
GOOD = [
    f"acme,Acme Ltd,threshold,50,usdt,eth,{ETH},,\n",
    f"bolt,Bolt GmbH,instant,0,btc,btc,{BTC},,1.5\n",
    f"crux,Crux SA,threshold,120.50,xmr,xmr,{XMR},,\n",
]


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "clients.csv"
    path.write_text(HEADER + "".join(lines), encoding="utf-8")
    return path


def run(path: Path) -> tuple[int, dict]:
    out = io.StringIO()
    try:
        call_command("import_clients", str(path), "--json", stdout=out)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, json.loads(out.getvalue())


def test_it_imports_valid_clients(tmp_path: Path) -> None:
    code, out = run(write(tmp_path, GOOD))
    assert (code, out["ok"], out["created"]) == (0, True, 3)
    bolt = Client.objects.get(reference="bolt")
    assert (bolt.payout_strategy, bolt.fee_percent, bolt.payout_currency) == (
        "instant",
        Decimal("1.5"),
        "btc",
    )
    assert Client.objects.get(reference="crux").payout_threshold_usd == Decimal("120.50")
    assert AuditEvent.objects.filter(kind="client_created").count() == 3


def test_a_monero_typo_on_one_line_imports_nothing_and_names_the_line(tmp_path: Path) -> None:
    typo = XMR[:50] + ("A" if XMR[50] != "A" else "B") + XMR[51:]
    lines = [*GOOD, f"dyno,Dyno,threshold,75,xmr,xmr,{typo},,\n"]
    code, out = run(write(tmp_path, lines))
    assert code == 1 and not out["ok"]
    assert [e["line"] for e in out["errors"]] == [5]
    assert "payout_address" in out["errors"][0]["error"]
    assert not Client.objects.exists()


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (f"e1,E,weekly,50,usdt,eth,{ETH},,\n", "payout_strategy"),
        (f"e2,E,threshold,0,usdt,eth,{ETH},,\n", "Threshold must be more than 0"),
        (f"e3,E,instant,10,usdt,eth,{ETH},,\n", "Instant clients have a threshold of 0"),
        (f"e4,E,threshold,NaN,usdt,eth,{ETH},,\n", "payout_threshold_usd"),
        (f"e5,E,threshold,50,usdt,eth,{ETH},,101\n", "fee_percent"),
        (f"e6,E,threshold,50,usdt,eth,{ETH.lower()[:-1]}X,,\n", "payout_address"),
        (f"e7,E,threshold,50,usdt,eth,{ETH.replace('aAeb', 'AAeb')},,\n", "payout_address"),
        (f"a:b,E,threshold,50,usdt,eth,{ETH},,\n", "reference"),
        (",E,threshold,50,usdt,eth,{ETH},,\n", "Reference is required"),
        (f"acme,Again,threshold,50,usdt,eth,{ETH},,\n", "repeats line 2"),
    ],
)
def test_it_reports_each_invalid_line(tmp_path: Path, line: str, message: str) -> None:
    code, out = run(write(tmp_path, [*GOOD, line]))
    assert code == 1
    assert out["errors"][0]["line"] == 5
    assert message in out["errors"][0]["error"]
    assert not Client.objects.exists()


def test_it_reports_every_bad_line_at_once(tmp_path: Path) -> None:
    bad = f"x1,X,threshold,-5,usdt,eth,{ETH},,\n"
    code, out = run(write(tmp_path, [bad, GOOD[0], bad]))
    assert code == 1
    assert [e["line"] for e in out["errors"]] == [2, 4]


def test_it_rejects_a_file_with_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("reference,name\nacme,Acme\n")
    code, out = run(path)
    assert code == 1 and "missing columns" in out["errors"][0]["error"]


def test_a_rerun_upserts_by_reference_and_audits_the_address_change(tmp_path: Path) -> None:
    run(write(tmp_path, GOOD))
    new_eth = "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359"
    changed = [f"acme,Acme Ltd,threshold,50,usdt,eth,{new_eth},,\n", *GOOD[1:]]
    code, out = run(write(tmp_path, changed))
    assert (code, out["created"], out["updated"], out["unchanged"]) == (0, 0, 1, 2)
    assert Client.objects.get(reference="acme").payout_address == new_eth
    event = AuditEvent.objects.get(kind="payout_destination_changed")
    assert event.data["payout_address"] == {"old": ETH, "new": new_eth}


def test_names_as_finance_types_them_are_stored_as_changenow_tickers(tmp_path: Path) -> None:
    lines = [
        f"acme,Acme Ltd,threshold,50,USDT,ERC20,{ETH},,\n",
        f"bolt,Bolt GmbH,instant,0,BTC,Bitcoin,{BTC},,\n",
        f"crux,Crux SA,threshold,60,Tether,Ethereum,{ETH},,\n",
    ]
    code, out = run(write(tmp_path, lines))
    assert (code, out["created"]) == (0, 3), out
    stored = dict(
        (ref, (cur, net))
        for ref, cur, net in Client.objects.values_list(
            "reference", "payout_currency", "payout_network"
        )
    )
    assert stored == {"acme": ("usdt", "eth"), "bolt": ("btc", "btc"), "crux": ("usdt", "eth")}


def test_an_unknown_pair_imports_nothing_and_names_its_line(tmp_path: Path) -> None:
    lines = [*GOOD, f"dyno,Dyno,threshold,75,usdt,solana-devnet,{ETH},,\n"]
    code, out = run(write(tmp_path, lines))
    assert code == 1 and not Client.objects.exists()
    assert [e["line"] for e in out["errors"]] == [5]  # the header is line 1
    assert "does not offer usdt on solana-devnet" in out["errors"][0]["error"]
    assert "eth" in out["errors"][0]["error"]  # says where usdt is offered


@pytest.mark.parametrize(
    ("currency", "network", "message"),
    [
        ("usd", "usd", "fiat"),
        ("dogecoin-classic", "doge", "does not offer"),
    ],
)
def test_it_refuses_what_changenow_cannot_pay_out(
    tmp_path: Path, currency: str, network: str, message: str
) -> None:
    code, out = run(write(tmp_path, [f"e1,E,threshold,50,{currency},{network},{ETH},,\n"]))
    assert code == 1 and message in out["errors"][0]["error"]


def test_a_pair_that_needs_an_extra_id_requires_one(tmp_path: Path) -> None:
    xrp = "rHb9CJAWyB4rj91VRWn96DkukG4bwdtyTh"
    code, out = run(write(tmp_path, [f"e1,E,threshold,50,XRP,Ripple,{xrp},,\n"]))
    assert code == 1 and "needs an extra id" in out["errors"][0]["error"]
    code, out = run(write(tmp_path, [f"e1,E,threshold,50,XRP,Ripple,{xrp},12345,\n"]))
    assert code == 0, out
    assert Client.objects.get().payout_extra_id == "12345"


def test_a_currency_changenow_stopped_offering_is_refused(tmp_path: Path) -> None:
    from payouts.models import Currency

    Currency.objects.filter(ticker="btc").update(active=False)
    code, out = run(write(tmp_path, [f"bolt,Bolt GmbH,instant,0,btc,btc,{BTC},,\n"]))
    assert code == 1 and "no longer offers btc on btc" in out["errors"][0]["error"]


def test_one_line_reports_all_of_its_problems_at_once(tmp_path: Path) -> None:
    typo = XMR[:50] + ("A" if XMR[50] != "A" else "B") + XMR[51:]
    code, out = run(write(tmp_path, [f"dyno,Dyno,threshold,-10,xmr,xmr,{typo},,\n"]))
    assert code == 1
    message = out["errors"][0]["error"]
    assert "Threshold must be more than 0" in message and "Payout address" in message
