"""Closing an order and releasing its rows: the one path both kinds use, and the proofs it
needs (DESIGN.md 12.1).

- Funds *may have left* once any transfer of the order was signed, unless every signed
  transfer is proven dead on chain (its nonce used by a cancel or by another transaction,
  none of its payment hashes mined) or mined without effect. A person's word never proves
  it; `funds_check` asks the chain.
- Rows are released only when no funds may have left, or with a refund proved by
  `refund_verify`: a mined transaction to the host wallet that ChangeNOW reports as the
  refund of one of the order's exchanges, its value read from the chain. The rows go back
  at full value; the shortfall is recorded on the order as a platform loss.
- A write-off is always possible with a reason: the rows become `written_off`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from integrations.assets import from_base_units, quantize_down
from integrations.errors import ProviderError
from integrations.wallet import abi
from integrations.wallet.client import WalletClient
from payouts.models import Accumulation, ExchangeAttempt, Transfer, TransferTx
from payouts.postings import order_post_refund, order_post_write_off
from payouts.sending import alert, host_address, transfer_check, tx_hash_valid, wallet
from payouts.services import runtime_settings_get
from payouts.transitions import Actor, check_move, transition

REPEATED_FAILURES = 3


class ProofError(Exception):
    """The proof offered does not hold; the message says what is missing."""


# --- the one release path -----------------------------------------------------------------

_RELEASE_SQL = """
WITH moved AS (
    UPDATE payouts_accumulation
    SET state = %(to_state)s,
        {link}_id = CASE WHEN %(to_state)s = %(release_state)s THEN NULL ELSE {link}_id END,
        state_changed_at = now(),
        releases = CASE WHEN %(to_state)s <> %(release_state)s THEN releases
                        WHEN released_at > now() - interval '1 day' THEN releases + 1
                        ELSE 1 END,
        released_at = CASE WHEN %(to_state)s <> %(release_state)s THEN released_at
                           WHEN released_at > now() - interval '1 day' THEN released_at
                           ELSE now() END
    WHERE {link}_id = %(order_id)s AND state = %(rows_state)s
    RETURNING eth, usdt, releases
)
SELECT count(*), coalesce(sum(eth), 0), coalesce(sum(usdt), 0), coalesce(max(releases), 0)
FROM moved
"""


@dataclass(frozen=True)
class Released:
    rows: int
    eth: Decimal
    usdt: Decimal
    most_releases: int


def order_release_and_close(
    *,
    kind: Any,
    order_id: Any,
    to_state: str,
    actor: Actor,
    reason: str,
    write_off: bool = False,
    updates: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> Released:
    """Move the order to `failed` / `force_closed` and, in the same transaction, release its
    rows to the state before the order (or write them off). Callers prove first."""
    rows_to = "written_off" if write_off else kind.release_state
    check_move(Accumulation, kind.rows_state, rows_to)
    sql = _RELEASE_SQL.format(link=kind.link_field)
    with transaction.atomic():
        order = kind.model.objects.select_for_update().get(pk=order_id)
        check_move(kind.model, order.state, to_state)
        with connection.cursor() as cur:
            cur.execute(
                sql,
                {
                    "order_id": order.pk,
                    "to_state": rows_to,
                    "release_state": kind.release_state,
                    "rows_state": kind.rows_state,
                },
            )
            rows, eth, usdt, most = cur.fetchone()
        # Intents that never got signed hold nothing: they end with their order.
        Transfer.objects.filter(**{kind.link_field: order.pk}, state=Transfer.State.INTENT).update(
            state=Transfer.State.CLOSED, note=f"closed with its order ({to_state})"
        )
        transition(
            model=kind.model,
            pk=order.pk,
            to_state=to_state,
            actor=actor,
            reason=reason,
            updates=updates,
            data={
                "rows": rows,
                "eth": eth,
                "usdt": usdt,
                "accumulations": f"{kind.rows_state} -> {rows_to}",
                **(data or {}),
            },
        )
        released = Released(int(rows), Decimal(eth), Decimal(usdt), int(most))
        _post_close(kind, order, released, updates or {}, write_off, actor, reason)
    if not write_off and released.most_releases >= REPEATED_FAILURES:
        alert(
            key=f"repeated_release:{kind.name}",
            kind="repeated_failure",
            message=f"rows of {kind.name} {str(order_id)[:8]} were released "
            f"{released.most_releases} times within a day; last cause: {reason[:300]}",
        )
    return released


def _post_close(
    kind: Any,
    order: Any,
    released: Released,
    updates: dict[str, Any],
    write_off: bool,
    actor: Actor,
    reason: str,
) -> None:
    """Book what closing the order meant for the money: a proved refund and its shortfall,
    and/or the write-off of the rows' claim."""
    if updates.get("refund_tx_hash"):
        order_post_refund(
            kind=kind,
            order=order,
            asset=updates["loss_asset"],
            refund=updates["refund_received"],
            loss=updates["loss_amount"],
            tx_hash=updates["refund_tx_hash"],
            actor=actor,
        )
    if write_off:
        total = released.eth if kind.rows_state == "converting" else released.usdt
        order_post_write_off(kind=kind, order=order, total=total, actor=actor, reason=reason)


# --- did money leave? ---------------------------------------------------------------------


@dataclass
class FundsCheck:
    may_have_left: bool
    detail: str
    # transfers whose payment may still move or has moved: (id, hash, nonce, state)
    open_transfers: list[tuple[int, str, int | None, str]] = field(default_factory=list)
    mined_amount: Decimal = Decimal(0)
    asset: str = ""


def funds_check(*, kind: Any, order_id: Any, client: WalletClient | None = None) -> FundsCheck:
    """Ask the chain whether any payment of the order may have left the host wallet."""
    transfers = list(
        Transfer.objects.filter(**{kind.link_field: order_id})
        .exclude(state__in=[Transfer.State.INTENT, Transfer.State.CLOSED])
        .order_by("id")
    )
    signed = [t for t in transfers if t.tx_hash]
    if not signed:
        return FundsCheck(False, "no transaction was ever signed for this order")
    client = client or wallet()
    check = FundsCheck(False, "")
    notes = []
    for transfer in signed:
        view = transfer_check(client, transfer, rebroadcast=False)
        transfer.refresh_from_db()
        check.asset = transfer.asset
        if view.proves_nothing_left and not (
            transfer.state == Transfer.State.REVERTED and transfer.receipt_status != 0
        ):
            notes.append(f"{_short(transfer.tx_hash)} {transfer.state}")
            continue
        check.may_have_left = True
        check.open_transfers.append(
            (transfer.pk, transfer.mined_hash or transfer.tx_hash, transfer.nonce, transfer.state)
        )
        if transfer.state == Transfer.State.MINED:
            check.mined_amount += transfer.amount
        depth = "" if view.final else " (not final yet)"
        notes.append(f"{_short(transfer.mined_hash or transfer.tx_hash)} {transfer.state}{depth}")
    check.detail = "; ".join(notes)
    return check


def _short(value: str) -> str:
    return value[:12] + "…" if len(value) > 14 else value


# --- refunds ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RefundProof:
    tx_hash: str
    asset: str
    amount: Decimal  # what the refund brought back, read from the chain
    deposit: Decimal
    exchange_id: str

    @property
    def shortfall(self) -> Decimal:
        return self.deposit - self.amount


def refund_verify(*, kind: Any, order: Any, tx_hash: str) -> RefundProof:
    """Prove a refund of the order's deposit, or raise ProofError saying what is missing."""
    tx_hash = (tx_hash or "").strip().lower()
    if not tx_hash_valid(tx_hash):
        raise ProofError(f"{tx_hash!r} is not a transaction hash (0x and 64 hex digits)")
    if TransferTx.objects.filter(tx_hash=tx_hash).exists():
        raise ProofError(f"{tx_hash} is one of our own transfers, not a refund")
    from payouts.engine import KINDS

    for other in KINDS.values():
        used = other.model.objects.filter(refund_tx_hash=tx_hash).exclude(pk=order.pk).first()
        if used is not None:
            raise ProofError(f"{tx_hash} already proved the refund of {other.name} {used.pk}")
    funding = kind.funding(order)
    deposited = Transfer.objects.filter(
        **{kind.link_field: order.pk}, state=Transfer.State.MINED
    ).first()
    if deposited is None:
        raise ProofError(
            "no deposit of this order is mined: nothing to refund (release needs no refund "
            "once the chain proves the transfer dead)"
        )
    client = wallet()
    receipt = _read(lambda: client.get_receipt(tx_hash), "the wallet node")
    if receipt is None:
        raise ProofError(f"transaction {tx_hash} is not mined")
    if not receipt.succeeded:
        raise ProofError(f"transaction {tx_hash} reverted on chain")
    needed = runtime_settings_get().confirmations
    head = _read(client.get_block_number, "the wallet node")
    if receipt.confirmations(head) < needed:
        raise ProofError(
            f"transaction {tx_hash} is {receipt.confirmations(head)} blocks deep; a refund "
            f"counts once it is {needed} deep"
        )
    host = host_address().lower()
    amount = _refund_value(client, tx_hash, receipt, funding.asset, host)
    if amount <= 0:
        raise ProofError(
            f"transaction {tx_hash} moved no {funding.asset.upper()} to the host wallet"
        )
    exchange_id = _changenow_confirms(kind, order, tx_hash)
    if amount > deposited.amount:
        raise ProofError(
            f"the refund ({amount} {funding.asset.upper()}) is more than the deposit "
            f"({deposited.amount}): stop and check with ChangeNOW"
        )
    return RefundProof(tx_hash, funding.asset, amount, deposited.amount, exchange_id)


def _read(call: Any, what: str) -> Any:
    try:
        return call()
    except ProviderError as exc:
        raise ProofError(f"{what} could not be read: {exc}") from exc


def _refund_value(
    client: WalletClient, tx_hash: str, receipt: Any, asset: str, host: str
) -> Decimal:
    if asset == "eth":
        tx = _read(lambda: client.get_transaction(tx_hash), "the wallet node")
        if not tx or str(tx.get("to") or "").lower() != host:
            raise ProofError(f"transaction {tx_hash} is not a payment to the host wallet")
        return from_base_units(int(str(tx.get("value") or "0x0"), 16), "eth")
    token = (client.usdt_contract or settings.USDT_CONTRACT_ADDRESS).lower()
    units = 0
    for log in receipt.logs:
        decoded = abi.decode_transfer_log(log)
        if decoded is not None and decoded[0] == token and decoded[2] == host:
            units += decoded[3]
    if not units:
        raise ProofError(f"transaction {tx_hash} has no USDT Transfer log to the host wallet")
    return quantize_down(from_base_units(units, asset), asset)


def _changenow_confirms(kind: Any, order: Any, tx_hash: str) -> str:
    from payouts.engine import changenow

    exchange_ids = list(
        ExchangeAttempt.objects.filter(**{kind.link_field: order.pk})
        .exclude(exchange_id="")
        .order_by("-id")
        .values_list("exchange_id", flat=True)
    )
    if not exchange_ids:
        raise ProofError("the order has no ChangeNOW exchange that could have refunded it")
    said = []
    for exchange_id in dict.fromkeys(exchange_ids):
        exchange = _read(lambda eid=exchange_id: changenow().get_exchange(eid), "ChangeNOW")
        if exchange.status == "refunded" and (exchange.refund_hash or "").lower() == tx_hash:
            return exchange_id
        said.append(f"{exchange_id}: {exchange.status}, refundHash {exchange.refund_hash or '-'}")
    raise ProofError(
        "ChangeNOW does not report this refund for the order's exchanges (" + "; ".join(said) + ")"
    )
