"""The send path: the only code that moves money out of the host wallet.

Rules it keeps (DESIGN.md 5 and 12.3):
- Everything that signs or broadcasts runs under the host-wallet lock, so nonces are handed
  out one at a time, and re-reads the order's state before signing and again before
  broadcasting: an order that left its sending state (an operator closed it) is never paid.
- A transfer intent is written first and holds no nonce. The nonce is taken when the first
  transaction is signed: the chain's confirmed count plus our own transfers that hold a
  nonce above it, which must be contiguous (nothing is signed above a gap).
- The signed bytes are stored before they are broadcast; a retry re-broadcasts them. A
  same-nonce replacement (speed-up or cancel) is a new `TransferTx` of the same transfer;
  receipts are looked up for every one of them and whichever mines is the one recorded.
- Final means `confirmations` blocks deep; until then receipts are re-read, and a receipt a
  reorg removed sends the transfer back to pending (its stored bytes are re-broadcast).
- A transfer is *dead* only when the chain's confirmed nonce is past it and none of its
  hashes has a receipt (the nonce is read first, then the receipts).
"""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from integrations.assets import to_base_units
from integrations.errors import WalletError
from integrations.wallet.client import (
    GWEI,
    Fees,
    Receipt,
    TxRequest,
    WalletClient,
    bump_fees,
    erc20_transfer_logged,
)
from payouts.locks import advisory_lock
from payouts.models import Transfer, TransferTx
from payouts.postings import transfer_post_final
from payouts.services import runtime_settings_get
from payouts.signals import engine_alert
from payouts.transitions import Actor, audit_record

log = logging.getLogger("payouts.sending")

WALLET_LOCK_TIMEOUT_MS = 30_000
TX_HASH = re.compile(r"^0x[0-9a-fA-F]{64}$")


class SendError(Exception):
    """The send path found something it must not decide alone (shown to a person)."""


class SendStopped(Exception):
    """The order left its sending state while we held the wallet: nothing was sent."""


class ReplaceRefused(SendError):
    """A speed-up or cancel cannot be made (the message says why)."""


CANCEL_SIGNED = (
    "a cancel was already signed at nonce {nonce}: the payment is never re-signed after it; "
    "only a cancel may replace it now (replace_transfer --cancel raises the cancel's fees)"
)


# --- providers ----------------------------------------------------------------------------


def wallet() -> WalletClient:
    return WalletClient.from_settings()


def host_address() -> str:
    address = settings.HOST_WALLET_ADDRESS
    if not address:
        raise SendError("HOST_WALLET_ADDRESS is not configured")
    return address


def wallet_lock() -> contextlib.AbstractContextManager[bool]:
    """Single flight for the host wallet: one signer of nonces at a time, on every host."""
    return advisory_lock(
        "wallet", host_address().lower(), wait=True, timeout_ms=WALLET_LOCK_TIMEOUT_MS
    )


def order_ref(transfer: Transfer) -> tuple[str, Any]:
    return ("batch", transfer.batch_id) if transfer.batch_id else ("payout", transfer.payout_id)


def _order_state(transfer: Transfer) -> str:
    from payouts.engine import kind_get

    kind, order_id = order_ref(transfer)
    return kind_get(kind).model.objects.values_list("state", flat=True).get(pk=order_id)


def _audit(transfer: Transfer, kind: str, actor: Actor, reason: str = "", **data: Any) -> None:
    object_type, order_id = order_ref(transfer)
    audit_record(
        object_type="conversionbatch" if object_type == "batch" else "payout",
        object_id=order_id,
        kind=kind,
        actor=actor,
        reason=reason,
        data={"transfer": transfer.pk, "nonce": transfer.nonce, **data},
    )


def alert(*, key: str, kind: str, message: str, transfer: Transfer | None = None) -> None:
    """Raise an operator alert (the back office listens; the engine never imports it)."""
    order_kind, order_id = order_ref(transfer) if transfer is not None else ("", None)
    engine_alert.send(
        sender=__name__,
        key=key,
        kind=kind,
        message=message,
        order_kind=order_kind,
        order_id=order_id,
    )


# --- nonces -------------------------------------------------------------------------------


def nonce_next(client: WalletClient, *, sender: str, chain_id: int) -> int:
    """The next nonce: the chain's confirmed count plus our transfers holding a nonce at or
    above it. Refuses when those are not contiguous: a transaction signed above a gap can
    never be mined, and every later one would wait behind it."""
    confirmed = client.get_confirmed_nonce(sender)
    rows = list(
        Transfer.objects.filter(
            from_address=sender,
            chain_id=chain_id,
            state__in=Transfer.HOLDS_NONCE,
            nonce__gte=confirmed,
        ).values_list("nonce", "final_at", "tx_hash")
    )
    behind = [(nonce, tx) for nonce, final_at, tx in rows if final_at is not None]
    if behind:
        nonce, tx = min(behind)
        raise SendError(
            f"the node reports {confirmed} confirmed transactions of {sender}, but our transfer "
            f"{tx} at nonce {nonce} is final on chain: the node is behind our books (restored "
            "or replaced node?); refusing to sign"
        )
    held = sorted(nonce for nonce, _, _ in rows)
    if held != list(range(confirmed, confirmed + len(held))):
        raise SendError(
            f"nonce gap: the chain confirmed {confirmed} transactions of {sender}, our open "
            f"transfers hold nonces {held}; refusing to sign above a gap (runbook: nonce gap)"
        )
    return confirmed + len(held)


def _fees(client: WalletClient) -> Fees:
    """The node's suggestion, never above the run-time ceiling."""
    ceiling = int(runtime_settings_get().max_fee_per_gas_gwei * GWEI)
    fees = client.suggest_fees()
    if fees.gas_price is not None:
        return Fees(gas_price=min(fees.gas_price, ceiling))
    max_fee = min(fees.max_fee_per_gas or 0, ceiling)
    return Fees(
        max_fee_per_gas=max_fee,
        max_priority_fee_per_gas=min(fees.max_priority_fee_per_gas or 0, max_fee),
    )


def _fee_fields(fees: Fees) -> dict[str, Any]:
    if fees.gas_price is not None:
        return {"max_fee_per_gas": fees.gas_price, "max_priority_fee_per_gas": fees.gas_price}
    return {
        "max_fee_per_gas": fees.max_fee_per_gas,
        "max_priority_fee_per_gas": fees.max_priority_fee_per_gas,
    }


# --- sending ------------------------------------------------------------------------------


def live_transfer(*, link_field: str, order_id: object) -> Transfer | None:
    return (
        Transfer.objects.filter(**{link_field: order_id}, state__in=Transfer.LIVE)
        .order_by("-id")
        .first()
    )


@dataclass(frozen=True)
class Payment:
    asset: str  # "eth" | "usdt"
    amount: Decimal
    to: str


def transfer_send(
    *,
    link_field: str,
    order: Any,
    payment: Payment,
    sending_states: frozenset[str],
    actor: Actor,
) -> Transfer:
    """Send the order's payment once: write the intent, sign it at the next nonce, store the
    bytes, broadcast them; or finish the send a dead worker began. Raises SendStopped (and
    sends nothing) when the order is no longer in one of `sending_states`."""
    client = wallet()
    sender = host_address()
    with wallet_lock():
        if _state_of(order) not in sending_states:
            raise SendStopped(f"the order is {_state_of(order)}: nothing sent")
        transfer = live_transfer(link_field=link_field, order_id=order.pk)
        if transfer is None:
            transfer = _intent_create(link_field, order, payment, sender, client, actor)
        if (transfer.asset, transfer.amount, transfer.to_address) != (
            payment.asset,
            payment.amount,
            payment.to,
        ):
            raise SendError(
                f"stored transfer {transfer.pk} ({transfer.amount} {transfer.asset} to "
                f"{transfer.to_address}) does not match the order: refusing to send"
            )
        fresh = False
        if transfer.state == Transfer.State.INTENT:
            _sign_original(transfer, client, sender, order, sending_states, actor)
            fresh = True
        if transfer.state in Transfer.PENDING:
            if _state_of(order) not in sending_states:
                if fresh:
                    # Signed here and never handed to any node: the nonce can go back.
                    Transfer.objects.filter(pk=transfer.pk).update(
                        state=Transfer.State.CLOSED,
                        raw_tx="",
                        note="signed, never broadcast: the order left its sending state",
                    )
                    raise SendStopped("the order left its sending state before broadcast")
                raise SendStopped("the order left its sending state: the signed bytes wait")
            _broadcast(transfer, client)
    transfer.refresh_from_db()
    return transfer


def _state_of(order: Any) -> str:
    return type(order).objects.values_list("state", flat=True).get(pk=order.pk)


def _intent_create(
    link_field: str,
    order: Any,
    payment: Payment,
    sender: str,
    client: WalletClient,
    actor: Actor,
) -> Transfer:
    attempts = Transfer.objects.filter(**{link_field: order.pk}).count()
    transfer = Transfer.objects.create(
        **{link_field: order},
        attempt=attempts + 1,
        asset=payment.asset,
        amount=payment.amount,
        to_address=payment.to,
        from_address=sender,
        chain_id=client.chain_id(),
    )
    _audit(
        transfer,
        "transfer_intent",
        actor,
        asset=payment.asset,
        amount=payment.amount,
        to=payment.to,
        attempt=transfer.attempt,
    )
    return transfer


def _build(client: WalletClient, transfer: Transfer, nonce: int, fees: Fees) -> TxRequest:
    if transfer.asset == "eth":
        return client.build_eth_transfer(
            transfer.to_address, transfer.amount, nonce=nonce, fees=fees
        )
    return client.build_erc20_transfer(
        transfer.to_address, transfer.amount, nonce=nonce, asset=transfer.asset, fees=fees
    )


def _sign_original(
    transfer: Transfer,
    client: WalletClient,
    sender: str,
    order: Any,
    sending_states: frozenset[str],
    actor: Actor,
) -> None:
    chain_id = client.chain_id()
    if chain_id != transfer.chain_id:
        raise SendError(
            f"the signer is on chain {chain_id}, the transfer was written for chain "
            f"{transfer.chain_id}: refusing to sign"
        )
    nonce = nonce_next(client, sender=sender, chain_id=chain_id)
    request = _build(client, transfer, nonce, _fees(client))
    if _state_of(order) not in sending_states:
        raise SendStopped("the order left its sending state before signing")
    signed = client.sign(request)
    now = timezone.now()
    try:
        with transaction.atomic():
            updated = Transfer.objects.filter(pk=transfer.pk, state=Transfer.State.INTENT).update(
                state=Transfer.State.SIGNED,
                nonce=nonce,
                raw_tx=signed.raw,
                tx_hash=signed.hash,
                signed_at=now,
                last_signed_at=now,
                **_fee_fields(request.fees),
            )
            if updated != 1:
                now_state = Transfer.objects.values_list("state", flat=True).get(pk=transfer.pk)
                if now_state == Transfer.State.CLOSED:
                    # Its order was closed meanwhile: these bytes are dropped, never sent.
                    raise SendStopped("the order was closed while the transfer was signed")
                raise SendError(f"transfer {transfer.pk} changed while it was being signed")
            TransferTx.objects.create(
                transfer=transfer,
                kind=TransferTx.Kind.ORIGINAL,
                tx_hash=signed.hash,
                raw_tx=signed.raw,
                nonce=nonce,
                actor=actor.name,
                **_fee_fields(request.fees),
            )
    except IntegrityError as exc:
        raise SendError(
            f"nonce {nonce} on chain {chain_id} is already held by another of our transfers: "
            "refusing to sign (is the node behind our books?)"
        ) from exc
    transfer.refresh_from_db()
    _audit(transfer, "transfer_signed", actor, tx_hash=signed.hash, fees=_fee_fields(request.fees))


def _broadcast(transfer: Transfer, client: WalletClient) -> None:
    client.broadcast(transfer.raw_tx)
    Transfer.objects.filter(pk=transfer.pk).update(
        state=Transfer.State.BROADCAST,
        broadcast_at=transfer.broadcast_at or timezone.now(),
        broadcast_count=transfer.broadcast_count + 1,
    )


# --- receipts, finality, dead transfers ---------------------------------------------------


@dataclass(frozen=True)
class ChainView:
    """What the chain says of one transfer right now."""

    state: str
    final: bool
    depth: int = 0
    tx_hash: str = ""

    @property
    def pending(self) -> bool:
        return self.state in Transfer.PENDING

    @property
    def proves_nothing_left(self) -> bool:
        """Proof that the payment itself did not move (gas may have)."""
        if self.state == Transfer.State.DEAD:
            return True
        return self.final and self.state in (Transfer.State.CANCELLED, Transfer.State.REVERTED)


def receipt_is_cancel(transfer: Transfer, receipt: Receipt, *, kind: str = "") -> bool:
    """Whether the mined transaction is a cancel: by its label (`kind`, when known), or by
    what it did (a send from the host wallet back to itself), so a record labelled
    otherwise never passes a cancel off as the payment."""
    if kind == TransferTx.Kind.CANCEL:
        return True
    return bool(receipt.to) and receipt.to.lower() == transfer.from_address.lower()


def transfer_has_cancel(transfer: Transfer) -> bool:
    return TransferTx.objects.filter(transfer=transfer, kind=TransferTx.Kind.CANCEL).exists()


def _effective(client: WalletClient, transfer: Transfer, receipt: Receipt) -> bool:
    if not receipt.succeeded:
        return False
    if transfer.asset == "eth":
        return True
    token = client.usdt_contract or settings.USDT_CONTRACT_ADDRESS
    units = to_base_units(transfer.amount, transfer.asset)
    return erc20_transfer_logged(receipt, token, transfer.from_address, transfer.to_address, units)


def transfer_check(
    client: WalletClient,
    transfer: Transfer,
    *,
    rebroadcast: bool = True,
    actor: Actor | None = None,
) -> ChainView:
    """Look the transfer up on chain (every hash it was ever signed with) and record what
    the chain says. Pending transfers are re-broadcast with their newest stored bytes when
    `rebroadcast` (the node may have lost them)."""
    if transfer.state not in (*Transfer.HOLDS_NONCE, Transfer.State.ABANDONED) or not (
        transfer.tx_hash
    ):
        return ChainView(transfer.state, final=True)
    if transfer.final_at is not None:
        return ChainView(transfer.state, final=True, tx_hash=transfer.mined_hash)
    actor = actor or Actor.system("wallet")
    needed = runtime_settings_get().confirmations
    # The nonce first: a transaction mined between the two reads must not look dead.
    confirmed_nonce = client.get_confirmed_nonce(transfer.from_address)
    head = client.get_block_number()
    hashes = list(
        TransferTx.objects.filter(transfer=transfer).order_by("-id").values_list("tx_hash", "kind")
    ) or [(transfer.tx_hash, TransferTx.Kind.ORIGINAL)]
    for tx_hash, kind in hashes:
        receipt = client.get_receipt(tx_hash)
        if receipt is None:
            continue
        if receipt_is_cancel(transfer, receipt, kind=kind):
            state = Transfer.State.CANCELLED
        else:
            state = (
                Transfer.State.MINED
                if _effective(client, transfer, receipt)
                else Transfer.State.REVERTED
            )
        depth = receipt.confirmations(head)
        final = depth >= needed
        first_time = transfer.state != state or transfer.mined_hash != tx_hash
        now = timezone.now()
        with transaction.atomic():
            # Filtered on final_at: of two checkers racing, only one makes it final and
            # books it.
            updated = Transfer.objects.filter(pk=transfer.pk, final_at__isnull=True).update(
                state=state,
                mined_hash=tx_hash,
                receipt_status=receipt.status,
                block_number=receipt.block_number,
                block_hash=receipt.block_hash or "",
                gas_fee_wei=receipt.fee_wei,
                mined_at=transfer.mined_at or now,
                final_at=now if final else None,
            )
            if updated and final:
                transfer.refresh_from_db()
                transfer_post_final(transfer=transfer, actor=actor)
        if first_time:
            transfer.refresh_from_db()
            _audit(
                transfer, f"transfer_{state}", actor, tx_hash=tx_hash, block=receipt.block_number
            )
            wallet_wake()
        return ChainView(state, final=final, depth=depth, tx_hash=tx_hash)
    if transfer.state in (Transfer.State.MINED, Transfer.State.REVERTED, Transfer.State.CANCELLED):
        # A reorg took the receipt away: pending again, and the stored bytes go out again.
        # (Filtered on what this checker saw: a concurrent checker that made it final wins.)
        reorged = Transfer.objects.filter(
            pk=transfer.pk, state=transfer.state, final_at__isnull=True
        ).update(
            state=Transfer.State.BROADCAST,
            mined_hash="",
            receipt_status=None,
            block_number=None,
            block_hash="",
            gas_fee_wei=None,
            mined_at=None,
        )
        transfer.refresh_from_db()
        if not reorged:
            return ChainView(transfer.state, final=transfer.final_at is not None)
        _audit(transfer, "transfer_reorged", actor, tx_hash=transfer.tx_hash)
    if transfer.nonce is not None and confirmed_nonce > transfer.nonce:
        dead = Transfer.objects.filter(
            pk=transfer.pk, state=transfer.state, final_at__isnull=True
        ).update(
            state=Transfer.State.DEAD,
            note=f"nonce {transfer.nonce} used by another transaction; none of ours mined",
        )
        transfer.refresh_from_db()
        if not dead:  # a concurrent checker saw one of our hashes mined: its view stands
            return ChainView(transfer.state, final=transfer.final_at is not None)
        _audit(transfer, "transfer_dead", actor, confirmed_nonce=confirmed_nonce)
        return ChainView(Transfer.State.DEAD, final=True)
    if rebroadcast and transfer.state in Transfer.PENDING:
        with contextlib.suppress(WalletError):
            client.broadcast(transfer.raw_tx)
            # Only from pending: a concurrent checker may have seen it mined meanwhile.
            Transfer.objects.filter(
                pk=transfer.pk, state__in=Transfer.PENDING, final_at__isnull=True
            ).update(
                state=Transfer.State.BROADCAST,
                broadcast_count=transfer.broadcast_count + 1,
                broadcast_at=transfer.broadcast_at or timezone.now(),
            )
    return ChainView(transfer.state, final=False)


def wallet_wake() -> None:
    """A transfer landed: orders that wait on the wallet (a lower nonce, a signer error)
    go now, not on their own backoff timers."""
    from payouts.engine import KINDS, OPEN_STATES, enqueue_advance

    for name, kind in KINDS.items():
        waiting = kind.model.objects.filter(state__in=OPEN_STATES).filter(
            Q(next_attempt_at__isnull=False) & ~Q(last_error_code="")
        )
        ids = list(waiting.values_list("pk", flat=True)[:200])
        if ids:
            kind.model.objects.filter(pk__in=ids).update(next_attempt_at=None)
            for pk in ids:
                enqueue_advance(kind=name, order_id=pk)


# --- replacement --------------------------------------------------------------------------


@dataclass(frozen=True)
class Replacement:
    order_id: str
    nonce: int
    old_hash: str
    new_hash: str
    max_fee_per_gas: int
    kind: str  # "speed_up" | "cancel"

    def as_json(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "nonce": self.nonce,
            "old_hash": self.old_hash,
            "new_hash": self.new_hash,
            "max_fee_per_gas": str(self.max_fee_per_gas),
            "kind": self.kind,
        }


def transfer_replace(*, transfer_id: int, cancel: bool, actor: Actor, reason: str) -> Replacement:
    """Re-sign the transfer's transaction at the same nonce with both fee caps raised by at
    least 12.5% (or to the node's suggestion), never above `max_fee_per_gas_gwei`: the same
    payment (speed-up) or a zero-value transfer to the host wallet (cancel)."""
    client = wallet()
    with wallet_lock():
        transfer = Transfer.objects.get(pk=transfer_id)
        view = transfer_check(client, transfer, rebroadcast=False, actor=actor)
        transfer.refresh_from_db()
        if not view.pending:
            raise ReplaceRefused(f"the transfer is {transfer.state}: nothing pending to replace")
        if not cancel and transfer_has_cancel(transfer):
            # Re-signing the payment now would undo a person's (or the upkeep's) decision to
            # stop it, and re-signing the current bytes would pass the cancel off as it.
            raise ReplaceRefused(CANCEL_SIGNED.format(nonce=transfer.nonce))
        from payouts.engine import OPEN_STATES

        if not cancel and _order_state(transfer) not in (*OPEN_STATES, "needs_attention"):
            raise ReplaceRefused(
                f"the order is {_order_state(transfer)}: only a cancel may replace its transfer"
            )
        if transfer.max_fee_per_gas is None or transfer.max_priority_fee_per_gas is None:
            raise ReplaceRefused("the transfer's fees are not recorded: cannot raise them")
        old_max, old_tip = int(transfer.max_fee_per_gas), int(transfer.max_priority_fee_per_gas)
        ceiling = int(runtime_settings_get().max_fee_per_gas_gwei * GWEI)
        bumped = bump_fees(old_max, old_tip, client.suggest_fees(), ceiling_wei=ceiling)
        if bumped.max_fee_per_gas <= old_max or bumped.max_priority_fee_per_gas <= old_tip:
            alert(
                key=f"fee_ceiling:{transfer.pk}",
                kind="fee_ceiling",
                message=f"transfer {transfer.tx_hash} (nonce {transfer.nonce}) is stuck at the "
                f"fee ceiling of {runtime_settings_get().max_fee_per_gas_gwei} gwei",
                transfer=transfer,
            )
            raise ReplaceRefused(
                f"the fees are at the ceiling max_fee_per_gas_gwei: raise the run-time setting "
                f"to replace transaction {transfer.tx_hash}"
            )
        if bumped.capped:
            alert(
                key=f"fee_ceiling:{transfer.pk}",
                kind="fee_ceiling",
                message=f"replacement of {transfer.tx_hash} capped at the fee ceiling",
                transfer=transfer,
            )
        legacy = old_max == old_tip and _is_legacy(transfer)
        fees = (
            Fees(gas_price=bumped.max_fee_per_gas)
            if legacy
            else Fees(
                max_fee_per_gas=bumped.max_fee_per_gas,
                max_priority_fee_per_gas=bumped.max_priority_fee_per_gas,
            )
        )
        if cancel:
            request = client.build_cancel(
                nonce=transfer.nonce, from_address=transfer.from_address, fees=fees
            )
        else:
            request = TxRequest.from_signed(
                transfer.raw_tx, transfer.from_address, asset=transfer.asset
            ).with_fees(fees)
        signed = client.sign(request)
        kind = TransferTx.Kind.CANCEL if cancel else TransferTx.Kind.SPEED_UP
        TransferTx.objects.create(
            transfer=transfer,
            kind=kind,
            tx_hash=signed.hash,
            raw_tx=signed.raw,
            nonce=transfer.nonce,
            actor=actor.name,
            reason=reason,
            **_fee_fields(fees),
        )
        old_hash = transfer.tx_hash
        # Stored before it goes out; it becomes the transfer's current bytes only once a
        # node took it (a refused replacement leaves the old one current).
        client.broadcast(signed.raw)
        now = timezone.now()
        Transfer.objects.filter(pk=transfer.pk).update(
            raw_tx=signed.raw,
            tx_hash=signed.hash,
            last_signed_at=now,
            replacements=transfer.replacements + 1,
            state=Transfer.State.BROADCAST,
            broadcast_count=transfer.broadcast_count + 1,
            **_fee_fields(fees),
        )
        transfer.refresh_from_db()
        _audit(
            transfer,
            "transfer_cancel" if cancel else "transfer_speed_up",
            actor,
            reason=reason,
            old_hash=old_hash,
            new_hash=signed.hash,
            fees=_fee_fields(fees),
        )
    order_kind, order_id = order_ref(transfer)
    return Replacement(
        order_id=str(order_id),
        nonce=int(transfer.nonce or 0),
        old_hash=old_hash,
        new_hash=signed.hash,
        max_fee_per_gas=bumped.max_fee_per_gas,
        kind=str(kind),
    )


def _is_legacy(transfer: Transfer) -> bool:
    from integrations.wallet.rlp import decode_transaction

    raw = bytes.fromhex(transfer.raw_tx[2:])
    return decode_transaction(raw).gas_price is not None


# --- the wallet's own upkeep --------------------------------------------------------------


def wallet_maintain(*, actor: Actor) -> list[str]:
    """Once per advance run: follow every transfer that is pending or not yet final, speed
    up the stuck ones of open orders, and fill with a cancel the nonce of any transfer whose
    order has ended (it can never be wanted again, and it holds back every later nonce).
    Returns one line per thing done, for logs."""
    from payouts.engine import TERMINAL_STATES

    if not settings.HOST_WALLET_ADDRESS:
        return []
    open_transfers = list(
        Transfer.objects.filter(
            from_address=settings.HOST_WALLET_ADDRESS,
            # Abandoned (first-round) transfers too: one that mines after all is recorded
            # and booked like any other.
            state__in=[*Transfer.HOLDS_NONCE, Transfer.State.ABANDONED],
            final_at__isnull=True,
        ).order_by("nonce")[:200]
    )
    if not open_transfers:
        return []
    client = wallet()
    stuck_after = runtime_settings_get().stuck_broadcast_minutes * 60
    done: list[str] = []
    for transfer in open_transfers:
        try:
            order_state = _order_state(transfer)
            ended = order_state in TERMINAL_STATES
            view = transfer_check(client, transfer, rebroadcast=not ended, actor=actor)
            if not view.pending:
                continue
            transfer.refresh_from_db()
            has_cancel = transfer_has_cancel(transfer)
            age = (
                timezone.now() - (transfer.last_signed_at or transfer.created_at)
            ).total_seconds()
            if ended and not has_cancel:
                result = transfer_replace(
                    transfer_id=transfer.pk,
                    cancel=True,
                    actor=actor,
                    reason=f"its order is {order_state}: fill nonce {transfer.nonce}",
                )
                done.append(f"cancel {result.old_hash} -> {result.new_hash}")
            elif age >= stuck_after:
                result = transfer_replace(
                    transfer_id=transfer.pk,
                    cancel=has_cancel,
                    actor=actor,
                    reason=f"unmined after {int(age // 60)} min",
                )
                done.append(f"{result.kind} {result.old_hash} -> {result.new_hash}")
        except (WalletError, SendError) as exc:
            log.warning("wallet upkeep", extra={"transfer": transfer.pk, "error": str(exc)[:300]})
            done.append(f"transfer {transfer.pk}: {exc}")
    return done


def tx_hash_valid(value: str) -> bool:
    return bool(TX_HASH.match(value or ""))
