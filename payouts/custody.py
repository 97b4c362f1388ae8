"""The host wallet's custody in the books: its opening balance and the owner's own top-ups
and withdrawals (DESIGN.md 12.2), each proved on chain before it is booked.

- `opening_post` books, once, what the chain holds beyond what the ledger already explains
  (the backfill) as the owner's equity.
- `owner_transfer_book` books a transaction an approver names by its hash: it must be mined
  deep enough, move ETH or USDT to or from the host wallet, not be one of our transfers or
  a refund already proved, and not be booked yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction

from integrations.assets import format_amount, from_base_units
from integrations.errors import ProviderError, read_with_retries
from integrations.wallet import abi
from ledger.models import LedgerTransaction
from ledger.services import Line, account_balance, ledger_post
from payouts.models import Transfer, TransferTx
from payouts.postings import HOST, WEI
from payouts.transitions import Actor, audit_record


class CustodyError(Exception):
    """The transaction cannot be booked; the message says why."""


def unbooked_outflows() -> dict[str, Decimal]:
    """What left the host wallet on chain and is not booked yet (mined, not final)."""
    out = {"eth": Decimal(0), "usdt": Decimal(0)}
    rows = Transfer.objects.filter(
        state__in=["mined", "reverted", "cancelled"], final_at__isnull=True
    ).values_list("state", "asset", "amount", "gas_fee_wei")
    for state, asset, amount, gas in rows:
        if state == "mined":
            out[asset.lower()] += amount
        out["eth"] += Decimal(gas or 0) * WEI
    return out


def host_balances_expected() -> dict[str, Decimal]:
    """What the chain should hold for the host wallet according to the books."""
    pending = unbooked_outflows()
    return {asset: account_balance(HOST, asset) - pending[asset] for asset in ("eth", "usdt")}


def opening_post(*, wallet: Any, actor: Actor) -> LedgerTransaction | None:
    """Book the host wallet's opening balance once; None if already booked or nothing to
    book. Raises ProviderError if the chain cannot be read (nothing is booked then)."""
    if LedgerTransaction.objects.filter(kind=LedgerTransaction.Kind.OPENING).exists():
        return None
    chain = {
        "eth": read_with_retries(wallet.get_balance),
        "usdt": read_with_retries(wallet.get_token_balance),
    }
    expected = host_balances_expected()
    lines: list[Line] = []
    for asset, held in chain.items():
        diff = held - expected[asset]
        if diff:
            lines += [(HOST, asset, diff), ("owner_equity", asset, -diff)]
    if not lines:
        return None
    try:
        with transaction.atomic():
            return ledger_post(
                kind=LedgerTransaction.Kind.OPENING,
                lines=lines,
                actor=actor.name,
                memo="opening balance of the host wallet, read from the chain",
            )
    except IntegrityError:
        return None  # booked by a concurrent bootstrap


@dataclass(frozen=True)
class OwnerTransfer:
    tx_hash: str
    direction: str  # "top_up" | "withdrawal"
    asset: str
    amount: Decimal
    gas: Decimal  # ETH the host wallet paid for it (withdrawals only)
    transaction_id: int

    def as_json(self) -> dict[str, Any]:
        return {
            "booked": True,
            "tx_hash": self.tx_hash,
            "direction": self.direction,
            "asset": self.asset,
            "amount": format_amount(self.amount),
            "gas_eth": format_amount(self.gas),
            "transaction": self.transaction_id,
        }


def owner_transfer_book(*, wallet: Any, tx_hash: str, reason: str, actor: Actor) -> OwnerTransfer:
    from payouts.sending import host_address, tx_hash_valid
    from payouts.services import runtime_settings_get

    tx_hash = (tx_hash or "").strip().lower()
    reason = (reason or "").strip()
    if not reason:
        raise CustodyError("a reason is required (who moved the funds and why)")
    if not tx_hash_valid(tx_hash):
        raise CustodyError(f"{tx_hash!r} is not a transaction hash (0x and 64 hex digits)")
    if (
        TransferTx.objects.filter(tx_hash=tx_hash).exists()
        or Transfer.objects.filter(tx_hash=tx_hash).exists()
    ):
        raise CustodyError(f"{tx_hash} is one of our own transfers: it is booked with its order")
    if LedgerTransaction.objects.filter(tx_hash=tx_hash).exists():
        raise CustodyError(f"{tx_hash} is already booked")
    try:
        receipt = wallet.get_receipt(tx_hash)
        head = wallet.get_block_number()
        tx = wallet.get_transaction(tx_hash) if receipt is not None else None
    except ProviderError as exc:
        raise CustodyError(f"the chain could not be read: {exc}") from exc
    if receipt is None or tx is None:
        raise CustodyError(f"transaction {tx_hash} is not mined")
    if not receipt.succeeded:
        raise CustodyError(f"transaction {tx_hash} reverted: it moved nothing")
    needed = runtime_settings_get().confirmations
    if receipt.confirmations(head) < needed:
        raise CustodyError(
            f"transaction {tx_hash} is {receipt.confirmations(head)} blocks deep; it can be "
            f"booked once it is {needed} deep"
        )
    host = host_address().lower()
    moves = _host_moves(tx, receipt, host, getattr(wallet, "usdt_contract", "") or "")
    if not moves:
        raise CustodyError(f"transaction {tx_hash} moved no ETH or USDT to or from the host wallet")
    sender = str(tx.get("from") or "").lower()
    gas = Decimal(receipt.fee_wei or 0) * WEI if sender == host else Decimal(0)
    lines: list[Line] = []
    for asset, delta in moves.items():
        lines += [(HOST, asset, delta), ("owner_equity", asset, -delta)]
    if gas:
        lines += [("network_fees", "eth", gas), (HOST, "eth", -gas)]
    asset, delta = next(iter(moves.items()))
    direction = "top_up" if delta > 0 else "withdrawal"
    try:
        with transaction.atomic():
            posted = ledger_post(
                kind=LedgerTransaction.Kind.OWNER_TRANSFER,
                lines=lines,
                actor=actor.name,
                memo=f"owner {direction.replace('_', '-')}: {reason[:500]}",
                tx_hash=tx_hash,
            )
            audit_record(
                object_type="ledgertransaction",
                object_id=posted.pk,
                kind="owner_transfer_booked",
                actor=actor,
                reason=reason,
                data={"tx_hash": tx_hash, "moves": {a: str(v) for a, v in moves.items()}},
            )
    except IntegrityError as exc:
        raise CustodyError(f"{tx_hash} is already booked") from exc
    return OwnerTransfer(tx_hash, direction, asset, abs(delta), gas, posted.pk)


def _host_moves(tx: Any, receipt: Any, host: str, token_address: str) -> dict[str, Decimal]:
    """Net ETH and USDT the transaction moved into (+) or out of (-) the host wallet."""
    moves: dict[str, Decimal] = {}
    value = from_base_units(int(str(tx.get("value") or "0x0"), 16), "eth")
    if value:
        if str(tx.get("to") or "").lower() == host:
            moves["eth"] = value
        elif str(tx.get("from") or "").lower() == host:
            moves["eth"] = -value
    token = str(token_address or settings.USDT_CONTRACT_ADDRESS).lower()
    units = 0
    for log in receipt.logs:
        decoded = abi.decode_transfer_log(log)
        if decoded is None or decoded[0] != token:
            continue
        if decoded[2] == host:
            units += decoded[3]
        if decoded[1] == host:
            units -= decoded[3]
    if units:
        moves["usdt"] = from_base_units(units, "usdt")
    return moves
