"""Search as finance types it: a NOWPayments order_id, a payment id, an exchange id, a
whole hash, or a hash's first characters as the pages show them (8 or more)."""

from __future__ import annotations

import pytest
from django.test import Client as HttpClient
from django.urls import reverse

from payouts.models import Accumulation, Transfer, TransferTx
from tests.admin.conftest import World
from tests.factories import EIP55_ADDRESS

pytestmark = pytest.mark.django_db
ORIGINAL = "0x" + "ab12cd34" + "0" * 56
SPEED_UP = "0x" + "77ee99ff" + "1" * 56


@pytest.fixture
def sent(world: World) -> Transfer:
    """The completed batch's transfer, sped up once: two signed transactions, one nonce."""
    transfer = Transfer.objects.create(
        batch=world.completed,
        asset="eth",
        amount=world.completed.eth_total,
        to_address=EIP55_ADDRESS,
        from_address=EIP55_ADDRESS,
        chain_id=1,
        nonce=7,
        state="mined",
        raw_tx="0x02",
        tx_hash=SPEED_UP,
        mined_hash=SPEED_UP,
    )
    for kind, tx_hash in (("original", ORIGINAL), ("speed_up", SPEED_UP)):
        TransferTx.objects.create(
            transfer=transfer, kind=kind, tx_hash=tx_hash, raw_tx="0x02", nonce=7
        )
    return transfer


def listed(client: HttpClient, model: str, term: str) -> str:
    return client.get(reverse(f"admin:{model}_changelist"), {"q": term}).content.decode()


def test_a_payment_is_found_by_its_nowpayments_order_id(
    as_viewer: HttpClient, world: World
) -> None:
    payment = Accumulation.objects.get(pk=world.pending.pk)
    page = listed(as_viewer, "payouts_accumulation", payment.order_id)
    assert payment.payment_id in page
    others = Accumulation.objects.exclude(pk=payment.pk).values_list("payment_id", flat=True)
    assert not any(f">{p}<" in page for p in others)


def test_a_transfer_and_its_order_are_found_by_a_hash_prefix_of_any_signed_transaction(
    as_viewer: HttpClient, world: World, sent: Transfer
) -> None:
    for term in (ORIGINAL[:10], SPEED_UP[2:10], SPEED_UP.upper()[2:14]):
        transfers = listed(as_viewer, "payouts_transfer", term)
        assert f"/payouts/transfer/{sent.pk}/change/" in transfers, term
        batches = listed(as_viewer, "batches_conversionbatch", term)
        assert str(world.completed.pk)[:8] in batches, term


def test_seven_characters_are_not_taken_for_a_hash(
    as_viewer: HttpClient, world: World, sent: Transfer
) -> None:
    transfers = listed(as_viewer, "payouts_transfer", ORIGINAL[2:9])
    assert f"/payouts/transfer/{sent.pk}/change/" not in transfers
