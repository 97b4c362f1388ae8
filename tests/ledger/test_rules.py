"""The ledger's rules, enforced by the database: balance per asset at commit, append-only,
legs only beside their header, each cause booked once."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import DatabaseError, IntegrityError, connection, transaction

from ledger.models import Account, LedgerTransaction, Leg
from ledger.services import LedgerError, balances_get, ledger_post
from tests.factories import AccumulationFactory, ClientFactory

pytestmark = pytest.mark.django_db


def immediate() -> None:
    with connection.cursor() as cur:
        cur.execute("SET CONSTRAINTS ALL IMMEDIATE")


def raw_header(kind: str = "opening") -> int:
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO ledger_ledgertransaction (kind, memo, actor, tx_hash, created_at) "
            "VALUES (%s, '', 'test', '', now()) RETURNING id",
            [kind],
        )
        return cur.fetchone()[0]


def raw_leg(transaction_id: int, name: str, asset: str, amount: str) -> None:
    with connection.cursor() as cur:
        cur.execute(
            "INSERT INTO ledger_leg (transaction_id, account_id, amount) SELECT %s, id, %s "
            "FROM ledger_account WHERE name = %s AND asset = %s",
            [transaction_id, amount, name, asset],
        )


def test_it_refuses_at_commit_a_transaction_whose_legs_do_not_balance() -> None:
    with (
        pytest.raises(IntegrityError, match="does not balance: eth off by 0.5"),
        transaction.atomic(),
    ):
        tx = raw_header()
        raw_leg(tx, "host_wallet", "eth", "1.5")
        raw_leg(tx, "owner_equity", "eth", "-1")
        immediate()


def test_it_balances_per_asset_not_across_assets() -> None:
    with pytest.raises(IntegrityError, match="does not balance"), transaction.atomic():
        tx = raw_header()
        raw_leg(tx, "host_wallet", "eth", "1")
        raw_leg(tx, "owner_equity", "usdt", "-1")
        immediate()


def test_it_refuses_a_transaction_with_a_single_leg() -> None:
    with pytest.raises(IntegrityError, match="has 0 leg"), transaction.atomic():
        raw_header()
        immediate()


def test_ledger_rows_refuse_update_and_delete() -> None:
    posted = ledger_post(
        kind="opening",
        lines=[("host_wallet", "eth", Decimal(1)), ("owner_equity", "eth", Decimal(-1))],
        actor="system:tests",
    )
    immediate()
    leg = Leg.objects.filter(transaction=posted).first()
    for statement in (
        lambda: Leg.objects.filter(pk=leg.pk).update(amount=Decimal(2)),
        lambda: Leg.objects.filter(pk=leg.pk).delete(),
        lambda: LedgerTransaction.objects.filter(pk=posted.pk).update(memo="edited"),
        lambda: Account.objects.filter(name="host_wallet").update(name="elsewhere"),
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            statement()
    assert Leg.objects.get(pk=leg.pk).amount == Decimal(1)


@pytest.mark.django_db(transaction=True)
def test_legs_cannot_be_added_to_a_committed_transaction() -> None:
    posted = ledger_post(
        kind="opening",
        lines=[("host_wallet", "eth", Decimal(1)), ("owner_equity", "eth", Decimal(-1))],
        actor="system:tests",
    )
    with pytest.raises(IntegrityError, match="it was committed"), transaction.atomic():
        raw_leg(posted.pk, "host_wallet", "eth", "5")
        raw_leg(posted.pk, "owner_equity", "eth", "-5")
    assert balances_get(names=["host_wallet"])["host_wallet"]["eth"] == Decimal(1)


def test_the_service_refuses_an_unbalanced_posting_before_the_database() -> None:
    with pytest.raises(LedgerError, match="does not balance"):
        ledger_post(
            kind="opening",
            lines=[("host_wallet", "eth", Decimal(1)), ("owner_equity", "eth", Decimal("-0.9"))],
            actor="system:tests",
        )
    assert not LedgerTransaction.objects.filter(kind="opening").exists()


def test_a_cause_is_booked_once() -> None:
    lines = [("host_wallet", "eth", Decimal(1)), ("owner_equity", "eth", Decimal(-1))]
    ledger_post(kind="opening", lines=lines, actor="system:tests")
    with pytest.raises(IntegrityError), transaction.atomic():
        ledger_post(kind="opening", lines=lines, actor="system:tests")
    hash_ = "0x" + "ab" * 32
    ledger_post(kind="owner_transfer", lines=lines, actor="system:tests", tx_hash=hash_)
    with pytest.raises(IntegrityError), transaction.atomic():
        ledger_post(kind="owner_transfer", lines=lines, actor="system:tests", tx_hash=hash_)


def test_intake_is_booked_in_the_statement_that_credits_the_payment() -> None:
    client = ClientFactory(reference="acme")
    rows = AccumulationFactory.create_batch(3, client=client, eth=Decimal("0.25"))
    immediate()
    assert LedgerTransaction.objects.filter(kind="intake").count() == 3
    assert {t.accumulation_id for t in LedgerTransaction.objects.filter(kind="intake")} == {
        r.pk for r in rows
    }
    balances = balances_get()
    assert balances["host_wallet"]["eth"] == Decimal("0.75")
    assert balances["clients:acme"]["eth"] == Decimal("0.75")  # owed: natural sign


def test_balances_command_prints_the_contract_json() -> None:
    AccumulationFactory(client=ClientFactory(reference="acme"), eth=Decimal("0.1"))
    out = io.StringIO()
    call_command("balances", "--json", stdout=out)
    payload = json.loads(out.getvalue())
    assert payload["accounts"]["clients:acme"] == {"eth": "0.1"}
    assert payload["accounts"]["host_wallet"]["eth"] == "0.1"
    assert set(payload) == {"accounts"}
    text = io.StringIO()
    call_command("balances", stdout=text)
    assert "clients:acme" in text.getvalue() and "0.1" in text.getvalue()


def test_one_check_covers_every_posting_of_the_commit_and_names_the_bad_one() -> None:
    with pytest.raises(IntegrityError) as refused, transaction.atomic():
        good = raw_header("transfer")
        raw_leg(good, "host_wallet", "eth", "1")
        raw_leg(good, "owner_equity", "eth", "-1")
        bad = raw_header("transfer")
        raw_leg(bad, "host_wallet", "eth", "2")
        raw_leg(bad, "owner_equity", "eth", "-1")
        immediate()
    assert f"ledger transaction {bad} (transfer) does not balance: eth off by 1" in str(
        refused.value
    )


def test_a_checked_posting_cannot_grow_later_in_the_same_transaction() -> None:
    posted = ledger_post(
        kind="opening",
        lines=[("host_wallet", "eth", Decimal(1)), ("owner_equity", "eth", Decimal(-1))],
        actor="system:tests",
    )
    immediate()
    with pytest.raises(IntegrityError, match=r"committed\s+or checked"), transaction.atomic():
        raw_leg(posted.pk, "host_wallet", "eth", "5")


def test_only_the_intake_trigger_writes_intake_legs() -> None:
    AccumulationFactory(client=ClientFactory(reference="acme"), eth=Decimal("0.1"))
    intake = LedgerTransaction.objects.get(kind="intake")
    with pytest.raises(IntegrityError, match="intake posting"), transaction.atomic():
        raw_leg(intake.pk, "host_wallet", "eth", "5")
    assert Leg.objects.filter(transaction=intake).count() == 2
