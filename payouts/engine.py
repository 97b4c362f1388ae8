"""The funded-order engine: one idempotent step at a time for batches and payouts.

    reserved -> exchange_created -> funds_sent -> converting -> completed

Rules it keeps (DESIGN.md sections 5 and 7):
- One step per call, under a per-order session advisory lock (released by PostgreSQL if the
  process dies), so several clusters can run it at once; a killed step is finished by the
  next call without doing anything twice.
- The attempt is recorded before a provider is called; providers are called outside any
  transaction; outcomes are recorded in new short transactions through `transition()`.
- Funds leave only through `payouts.sending` (nonces, signing, broadcast, replacement,
  receipts); funds go only to the payin address stored with the exchange.
- Operator actions take the same per-order lock (`payouts.locks.order_lock`), so a person
  and a step never act on one order at once.
- Transient errors back off. Before any funds could have left, the retry cap sends the order
  to `needs_attention`; with money in flight the order is polled for ever (at the backoff
  cap, with an alert once the cap is reached), and a finished exchange completes it by
  itself. Retry counts are consecutive failures: a successful provider read resets them.
- Nothing moves rows back once funds may have left: only a proof (a cancel mined at the
  transfer's nonce, a dead transfer, a proved refund) or an operator's write-off does.

The two kinds plug in through `OrderKind` (batches registers its own at start-up), so this
module never imports the batches app.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from integrations.assets import same_amount
from integrations.changenow.client import ChangeNowClient
from integrations.changenow.types import Exchange
from integrations.errors import ProviderError, WalletError, WalletErrorKind
from payouts import sending
from payouts.limits import AMOUNT_REFUSALS, exchange_range, exchange_range_forget
from payouts.locks import order_lock
from payouts.models import ExchangeAttempt, FundedOrder, Transfer
from payouts.sending import Payment, SendError, SendStopped, host_address, wallet
from payouts.signals import engine_alert
from payouts.transitions import Actor, TransitionError, audit_record, transition

log = logging.getLogger("payouts.engine")

MAX_RETRIES = 8
BACKOFF_BASE_SECONDS = 15
BACKOFF_MAX_SECONDS = 15 * 60
# A fixed-rate exchange must not be funded this close to its validUntil.
VALID_UNTIL_MARGIN = timedelta(seconds=60)

# Retrying cannot fix these: the nonce went to another transaction, or the signer signed
# something else, or we talk to the wrong chain.
UNRECOVERABLE_WALLET_ERRORS = frozenset(
    {WalletErrorKind.NONCE_TOO_LOW, WalletErrorKind.SIGNER_MISMATCH, WalletErrorKind.WRONG_CHAIN}
)
WAITING_STATUSES = frozenset({"new", "waiting"})
MOVING_STATUSES = frozenset({"confirming", "exchanging", "sending", "verifying"})
FAILED_STATUSES = frozenset({"failed", "refunded", "expired"})
OPEN_STATES = ("reserved", "exchange_created", "funds_sent", "converting")
TERMINAL_STATES = frozenset(FundedOrder.TERMINAL)
# States in which no funds can have left the host wallet for the order.
PRE_FUNDS_STATES = frozenset({"reserved", "exchange_created"})


class EngineError(Exception):
    """A step found something it must not decide alone."""


@dataclass(frozen=True)
class ExchangeSpec:
    from_currency: str
    from_network: str
    to_currency: str
    to_network: str
    amount_from: Decimal
    address: str
    extra_id: str = ""


@dataclass(frozen=True)
class Funding:
    """What the host wallet sends for the order: `asset` is 'eth' or 'usdt'."""

    asset: str
    amount: Decimal


class OrderKind(ABC):
    name: str
    model: type[FundedOrder]
    # The name of the link to this kind on ExchangeAttempt, Transfer and Accumulation.
    link_field: str
    # The state of the order's rows while it is open, and where a release puts them.
    rows_state: str
    release_state: str

    @abstractmethod
    def exchange_spec(self, order: Any) -> ExchangeSpec | None:
        """The exchange to create, or None when the order is a direct wallet transfer."""

    @abstractmethod
    def funding(self, order: Any) -> Funding: ...

    def direct_destination(self, order: Any) -> str:
        raise EngineError(f"{self.name} orders always go through an exchange")

    @abstractmethod
    def complete(self, *, order_id: Any, amount_to: Decimal | None, actor: Actor) -> None:
        """Finish the order's bookkeeping and move it to `completed`, in one transaction."""

    def sending_states(self, order: Any) -> frozenset[str]:
        """The states from which this order may send its funds."""
        return (
            frozenset({"reserved"})
            if self.exchange_spec(order) is None
            else frozenset({"exchange_created"})
        )

    def release_and_close(
        self, *, order_id: Any, to_state: str, actor: Actor, reason: str, write_off: bool = False
    ) -> int:
        """Close the order and release (or write off) its rows: the one path of both kinds."""
        from payouts.recovery import order_release_and_close

        return order_release_and_close(
            kind=self,
            order_id=order_id,
            to_state=to_state,
            actor=actor,
            reason=reason,
            write_off=write_off,
        ).rows


KINDS: dict[str, OrderKind] = {}


def kind_register(kind: OrderKind) -> None:
    KINDS[kind.name] = kind


def kind_get(name: str) -> OrderKind:
    try:
        return KINDS[name]
    except KeyError:
        raise EngineError(f"unknown order kind {name!r}") from None


# --- providers ----------------------------------------------------------------------------


def changenow() -> ChangeNowClient:
    return ChangeNowClient.from_settings()


# --- the step -----------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    id: str
    kind: str
    from_state: str
    to_state: str
    note: str = ""

    @property
    def moved(self) -> bool:
        return self.from_state != self.to_state

    def as_json(self) -> dict[str, str]:
        return {"id": self.id, "kind": self.kind, "from": self.from_state, "to": self.to_state}


def order_advance(*, kind: str, order_id: object, actor: Actor, force: bool = False) -> StepResult:
    """Run the next step of one order. Safe to call any number of times, from anywhere.

    `force` ignores the backoff (an operator's "sync now" / "retry")."""
    order_kind = kind_get(kind)
    with order_lock(kind, order_id) as got:
        order = order_kind.model.objects.get(pk=order_id)
        before = order.state
        if not got:
            return StepResult(str(order.pk), kind, before, before, "locked by another worker")
        step = _STEPS.get(before)
        if before == "needs_attention" and not force and not money_in_flight(order_kind, order.pk):
            step = None
        if step is None:
            return StepResult(str(order.pk), kind, before, before, "not open")
        if not force and order.next_attempt_at and order.next_attempt_at > timezone.now():
            return StepResult(str(order.pk), kind, before, before, "backing off")
        note = ""
        try:
            note = step(order_kind, order, actor) or ""
        except ProviderError as exc:
            note = _provider_failure(order_kind, order.pk, exc, actor)
        except (EngineError, SendError) as exc:
            note = _needs_attention(order_kind, order.pk, str(exc), "engine", actor)
        except SendStopped as exc:
            note = f"send stopped: {exc}"
        after = order_kind.model.objects.values_list("state", flat=True).get(pk=order.pk)
    result = StepResult(str(order.pk), kind, before, after, note)
    if result.moved and after in OPEN_STATES:
        enqueue_advance(kind=kind, order_id=order.pk)
    log.info(
        "order step",
        extra={"order_id": str(order.pk), "kind": kind, "from": before, "to": after, "note": note},
    )
    return result


def enqueue_task(func: str, *args: object, group: str = "") -> None:
    """Run a task soon in a worker, once the current transaction commits (the schedules
    remain the safety net if the broker loses it)."""
    if not getattr(settings, "ENGINE_ENQUEUE_FOLLOWUPS", True):
        return

    def _enqueue() -> None:
        from django_q.tasks import async_task

        async_task(func, *args, group=group or func)

    transaction.on_commit(_enqueue)


def enqueue_advance(*, kind: str, order_id: object) -> None:
    """Run the next step of the order soon in a worker."""
    enqueue_task("payouts.tasks.advance_order", kind, str(order_id), group="advance")


def _clear_retry() -> dict[str, object]:
    return {"retry_count": 0, "next_attempt_at": None, "last_error": "", "last_error_code": ""}


def _read_ok(kind: OrderKind, order: Any, provider: str = "changenow") -> None:
    """The provider answered: its count of consecutive failures starts again (a failure of
    another provider, say the signer, keeps counting)."""
    if order.retry_count and order.last_error.startswith(f"{provider}:"):
        kind.model.objects.filter(pk=order.pk).update(retry_count=0, last_error_code="")


def money_in_flight(kind: OrderKind, order_id: object) -> bool:
    """Was any transaction of the order signed (so funds may be on their way)?"""
    return (
        Transfer.objects.filter(**{kind.link_field: order_id})
        .exclude(tx_hash="")
        .exclude(state__in=[Transfer.State.CLOSED, Transfer.State.DEAD, Transfer.State.CANCELLED])
        .exists()
    )


def _note_error(kind: OrderKind, order_id: object, exc: ProviderError, actor: Actor) -> int:
    """Record a transient failure and schedule the retry; returns the retry count."""
    with transaction.atomic():
        order = kind.model.objects.select_for_update().get(pk=order_id)
        order.retry_count += 1
        base = getattr(settings, "ENGINE_BACKOFF_BASE_SECONDS", BACKOFF_BASE_SECONDS)
        cap = getattr(settings, "ENGINE_BACKOFF_MAX_SECONDS", BACKOFF_MAX_SECONDS)
        delay = min(base * 2 ** min(order.retry_count - 1, 30), cap)
        if exc.retry_after:
            delay = max(delay, int(exc.retry_after))
        order.next_attempt_at = timezone.now() + timedelta(seconds=delay)
        order.last_error = str(exc)[:2000]
        order.last_error_code = exc.code[:48]
        order.save(
            update_fields=["retry_count", "next_attempt_at", "last_error", "last_error_code"]
        )
        audit_record(
            object_type=kind.model._meta.model_name or kind.name,
            object_id=order.pk,
            kind="step_error",
            actor=actor,
            reason=str(exc)[:2000],
            data={"code": exc.code, "retry": order.retry_count, "retry_in_seconds": delay},
        )
        return order.retry_count


def _provider_failure(kind: OrderKind, order_id: object, exc: ProviderError, actor: Actor) -> str:
    order = kind.model.objects.get(pk=order_id)
    in_flight = money_in_flight(kind, order_id)
    if isinstance(exc, WalletError) and exc.code in UNRECOVERABLE_WALLET_ERRORS:
        if order.state == "needs_attention":
            return f"{exc.code}: {exc}"
        return _needs_attention(kind, order_id, str(exc), exc.code, actor)
    if exc.transient or isinstance(exc, WalletError):
        # Wallet trouble (signer down, not enough balance) is never a reason to give up the
        # order by itself: an operator fixes the wallet, the engine goes on.
        count = _note_error(kind, order_id, exc, actor)
        if count < MAX_RETRIES:
            return f"retry {count}/{MAX_RETRIES}: {exc.code}"
        if in_flight or order.state == "needs_attention":
            # Money may be out there: never go silent. Keep polling at the cap and say so.
            engine_alert.send(
                sender=__name__,
                key=f"retry_cap:{kind.name}:{order_id}",
                kind="retry_cap",
                message=f"{kind.name} {str(order_id)[:8]} failed {count} reads in a row "
                f"({exc.code}); it keeps polling every {BACKOFF_MAX_SECONDS // 60} min",
                order_kind=kind.name,
                order_id=order_id,
            )
            return f"retry {count} (at the cap, still polling): {exc.code}"
        return _needs_attention(kind, order_id, f"retries exhausted: {exc}", exc.code, actor)
    if order.state in PRE_FUNDS_STATES and not in_flight:
        kind.release_and_close(
            order_id=order_id, to_state="failed", actor=actor, reason=f"{exc.code}: {exc}"
        )
        _set_error(kind, order_id, exc.code, str(exc))
        return f"failed: {exc.code}"
    if order.state == "needs_attention":
        _set_error(kind, order_id, exc.code, str(exc))
        return f"{exc.code}: {exc}"
    return _needs_attention(kind, order_id, str(exc), exc.code, actor)


def _set_error(kind: OrderKind, order_id: object, code: str, message: str) -> None:
    kind.model.objects.filter(pk=order_id).update(
        last_error=message[:2000], last_error_code=code[:48]
    )


def _needs_attention(
    kind: OrderKind, order_id: object, reason: str, code: str, actor: Actor
) -> str:
    order = kind.model.objects.get(pk=order_id)
    if order.state == "needs_attention" or order.is_terminal:
        _set_error(kind, order_id, code, reason)
        return f"{order.state}: {reason[:200]}"
    # Orders with money in flight stay polled (at the cap) while they wait for a person.
    poll_at = (
        timezone.now() + timedelta(seconds=BACKOFF_MAX_SECONDS)
        if money_in_flight(kind, order_id)
        else None
    )
    transition(
        model=kind.model,
        pk=order_id,
        to_state="needs_attention",
        actor=actor,
        reason=reason[:2000],
        updates={
            "last_error": reason[:2000],
            "last_error_code": code[:48],
            "next_attempt_at": poll_at,
        },
        data={"code": code},
    )
    return f"needs attention: {reason[:200]}"


# reserved ---------------------------------------------------------------------------------


def _outside_range(kind: OrderKind, order: Any, spec: Any, limits: Any, actor: Actor) -> str:
    """Release an order ChangeNOW would refuse for its amount (checked before any exchange
    exists, so nothing left); '' when the amount is within the pair's range."""
    amount, asset = spec.amount_from, spec.from_currency
    if amount < limits.minimum:
        code, short = "below_minimum", f"below the exchange minimum {limits.minimum}"
        why = f"{amount} {asset} is below ChangeNOW's minimum {limits.minimum}: rows released"
    elif limits.maximum is not None and amount > limits.maximum:
        code, short = "above_maximum", f"above the exchange maximum {limits.maximum}"
        why = (
            f"{amount} {asset} is above ChangeNOW's maximum {limits.maximum}: rows released; "
            "the next sweep splits them within the range"
        )
    else:
        return ""
    kind.release_and_close(order_id=order.pk, to_state="failed", actor=actor, reason=why)
    _set_error(kind, order.pk, code, short)
    return f"failed: {code}"


def _step_reserved(kind: OrderKind, order: Any, actor: Actor) -> str:
    if kind.name == "payout":
        from payouts.approvals import payout_release_held

        if payout_release_held(payout=order):
            return "waits for a second person's approval (above the dual-control limit)"
    spec = kind.exchange_spec(order)
    if spec is None:
        return _send_funds(kind, order, actor, to=kind.direct_destination(order))
    client = changenow()
    pair = {
        "from_currency": spec.from_currency,
        "from_network": spec.from_network,
        "to_currency": spec.to_currency,
        "to_network": spec.to_network,
    }
    limits = exchange_range(**pair)
    refused = _outside_range(kind, order, spec, limits, actor)
    if refused:
        return refused
    field = kind.link_field
    attempt = ExchangeAttempt.objects.create(
        **{field: order},
        from_currency=spec.from_currency,
        from_network=spec.from_network,
        to_currency=spec.to_currency,
        to_network=spec.to_network,
        amount_from=spec.amount_from,
        payout_address=spec.address,
        payout_extra_id=spec.extra_id,
    )
    try:
        created = client.create_exchange(
            from_currency=spec.from_currency,
            to_currency=spec.to_currency,
            from_network=spec.from_network,
            to_network=spec.to_network,
            from_amount=spec.amount_from,
            address=spec.address,
            extra_id=spec.extra_id or None,
            refund_address=host_address(),
        )
    except ProviderError as exc:
        ExchangeAttempt.objects.filter(pk=attempt.pk).update(status="create_failed", error=str(exc))
        if exc.code in AMOUNT_REFUSALS:
            # ChangeNOW's range moved since it was read: size the next sweep with a fresh one.
            exchange_range_forget(**pair)
            engine_alert.send(
                sender=__name__,
                key=f"amount_refused:{spec.from_currency}:{spec.to_currency}:{spec.to_network}",
                kind="amount_refused",
                message=f"ChangeNOW refused {spec.amount_from} {spec.from_currency} -> "
                f"{spec.to_currency} ({exc.code}: {exc}); the rows wait for the next sweep, "
                "sized with a fresh range",
                order_kind=kind.name,
                order_id=order.pk,
            )
        raise
    if not created.payin_address:
        raise EngineError(f"exchange {created.id} was created without a payin address")
    if created.from_amount is not None and not same_amount(spec.amount_from, created.from_amount):
        raise EngineError(
            f"exchange {created.id} expects {created.from_amount} {spec.from_currency}, "
            f"the order holds {spec.amount_from}"
        )
    ExchangeAttempt.objects.filter(pk=attempt.pk).update(
        exchange_id=created.id,
        status="new",
        payin_address=created.payin_address,
        payin_extra_id=created.payin_extra_id or "",
        expected_amount_to=created.to_amount,
        valid_until=created.valid_until,
        status_history=[{"status": "new", "at": timezone.now().isoformat()}],
    )
    transition(
        model=kind.model,
        pk=order.pk,
        to_state="exchange_created",
        actor=actor,
        reason="exchange created",
        updates={
            "exchange_id": created.id,
            "payin_address": created.payin_address,
            "payin_extra_id": created.payin_extra_id or "",
            "provider_status": "new",
            **_clear_retry(),
        },
        data={"exchange_id": created.id, "payin_address": created.payin_address},
    )
    return f"exchange {created.id}"


# exchange_created -------------------------------------------------------------------------


def current_attempt(kind: OrderKind, order: Any) -> ExchangeAttempt:
    field = kind.link_field
    attempt = (
        ExchangeAttempt.objects.filter(**{field: order.pk}, exchange_id=order.exchange_id)
        .order_by("-id")
        .first()
    )
    if attempt is None:
        raise EngineError(f"no exchange attempt stored for exchange {order.exchange_id}")
    return attempt


def record_status(attempt: ExchangeAttempt, exchange: Exchange) -> None:
    history = list(attempt.status_history or [])
    if not history or history[-1].get("status") != exchange.status:
        history.append({"status": exchange.status, "at": timezone.now().isoformat()})
    ExchangeAttempt.objects.filter(pk=attempt.pk).update(
        status=exchange.status,
        status_history=history,
        amount_to=exchange.amount_to,
        payin_hash=exchange.payin_hash or "",
        payout_hash=exchange.payout_hash or "",
    )


def _step_exchange_created(kind: OrderKind, order: Any, actor: Actor) -> str:
    exchange = changenow().get_exchange(order.exchange_id)
    _read_ok(kind, order)
    record_status(current_attempt(kind, order), exchange)
    live = live_transfer(kind, order.pk)
    if live is not None and live.state != Transfer.State.INTENT:
        if exchange.status in WAITING_STATUSES and not _rate_expired(exchange):
            # A send was begun (perhaps by a worker that died): finish that one, never a new one.
            return _send_funds(kind, order, actor, to=order.payin_address)
        return _unwanted_transfer(kind, order, live, exchange, actor)
    if exchange.status in FAILED_STATUSES:
        kind.release_and_close(
            order_id=order.pk,
            to_state="failed",
            actor=actor,
            reason=f"exchange {exchange.id} is {exchange.status} before any funds were sent",
        )
        return f"failed: exchange {exchange.status}"
    if exchange.status not in WAITING_STATUSES:
        raise EngineError(
            f"exchange {exchange.id} is {exchange.status!r} although we sent nothing: "
            "check it with ChangeNOW before funding"
        )
    if _rate_expired(exchange):
        kind.release_and_close(
            order_id=order.pk,
            to_state="failed",
            actor=actor,
            reason=f"fixed rate of exchange {exchange.id} expires at {exchange.valid_until}",
        )
        return "failed: rate expired"
    if exchange.payin_address and exchange.payin_address != order.payin_address:
        raise EngineError(
            f"ChangeNOW reports payin address {exchange.payin_address}, we stored "
            f"{order.payin_address}: refusing to send"
        )
    return _send_funds(kind, order, actor, to=order.payin_address)


def _rate_expired(exchange: Exchange) -> bool:
    return bool(
        exchange.valid_until and timezone.now() >= exchange.valid_until - VALID_UNTIL_MARGIN
    )


def _unwanted_transfer(
    kind: OrderKind, order: Any, live: Transfer, exchange: Exchange, actor: Actor
) -> str:
    """We signed a payment, and the exchange will no longer take it. Fill its nonce with a
    cancel; only once the chain proves the payment dead are the rows released. If the
    payment mined after all, the exchange has our money: a person decides."""
    client = wallet()
    view = sending.transfer_check(client, live, rebroadcast=False, actor=actor)
    live.refresh_from_db()
    if live.state == Transfer.State.MINED:
        # Our deposit is out there: follow it like any deposit (the in-flight step sends the
        # order to needs_attention if the exchange will not take it).
        transition(
            model=kind.model,
            pk=order.pk,
            to_state="funds_sent",
            actor=actor,
            reason=f"deposit {live.mined_hash} mined while the exchange is {exchange.status}",
            updates=_clear_retry(),
        )
        return "deposit mined: following it"
    if view.proves_nothing_left:
        kind.release_and_close(
            order_id=order.pk,
            to_state="failed",
            actor=actor,
            reason=f"exchange {exchange.id} is {exchange.status}; our transfer at nonce "
            f"{live.nonce} is proven {live.state} on chain: no funds left",
        )
        return f"failed: exchange {exchange.status}, transfer {live.state}"
    if view.pending:
        from payouts.models import TransferTx

        if not TransferTx.objects.filter(transfer=live, kind=TransferTx.Kind.CANCEL).exists():
            sending.transfer_replace(
                transfer_id=live.pk,
                cancel=True,
                actor=actor,
                reason=f"exchange {exchange.id} is {exchange.status}: its payment is not wanted",
            )
            return f"cancelling transfer at nonce {live.nonce}"
    return f"waiting for the chain: transfer at nonce {live.nonce} is {live.state}"


# sending funds: the only code that moves money is in payouts.sending ----------------------


def live_transfer(kind: OrderKind, order_id: object) -> Transfer | None:
    return sending.live_transfer(link_field=kind.link_field, order_id=order_id)


def _send_funds(kind: OrderKind, order: Any, actor: Actor, *, to: str) -> str:
    if not to:
        raise EngineError("no destination address stored: refusing to send")
    funding = kind.funding(order)
    transfer = sending.transfer_send(
        link_field=kind.link_field,
        order=order,
        payment=Payment(asset=funding.asset, amount=funding.amount, to=to),
        sending_states=kind.sending_states(order),
        actor=actor,
    )
    try:
        transition(
            model=kind.model,
            pk=order.pk,
            to_state="funds_sent",
            actor=actor,
            reason=f"sent {transfer.amount} {transfer.asset}",
            updates=_clear_retry(),
            data={"tx_hash": transfer.tx_hash, "nonce": transfer.nonce, "to": to},
            expect_from=kind.sending_states(order),
        )
    except TransitionError as exc:
        raise EngineError(f"sent {transfer.tx_hash} but the order moved on: {exc}") from exc
    return f"sent {transfer.tx_hash}"


# funds_sent / converting / needs_attention with money in flight ---------------------------


def _step_in_flight(kind: OrderKind, order: Any, actor: Actor) -> str:
    transfer = live_transfer(kind, order.pk)
    attention = order.state == "needs_attention"
    if transfer is None:
        if attention:
            return _poll_attention(kind, order, actor)
        raise EngineError("order is marked funds_sent but has no live transfer")
    client = wallet()
    view = sending.transfer_check(client, transfer, actor=actor)
    transfer.refresh_from_db()
    if transfer.state == Transfer.State.REVERTED:
        if attention:
            return _poll_attention(kind, order, actor)
        raise EngineError(
            f"transfer {transfer.mined_hash} was mined without moving the payment "
            f"(receipt status {transfer.receipt_status}, no Transfer log counts as none)"
        )
    if transfer.state == Transfer.State.DEAD:
        raise EngineError(
            f"transfer at nonce {transfer.nonce} is dead: another transaction used its nonce"
        )
    if kind.exchange_spec(order) is None:
        if transfer.state == Transfer.State.MINED and view.final:
            kind.complete(order_id=order.pk, amount_to=transfer.amount, actor=actor)
            return "completed (direct transfer final)"
        if transfer.state == Transfer.State.MINED:
            return f"mined, {view.depth} confirmation(s): waiting until final"
        return "waiting for the transfer to be mined"
    exchange = changenow().get_exchange(order.exchange_id)
    _read_ok(kind, order)
    record_status(current_attempt(kind, order), exchange)
    kind.model.objects.filter(pk=order.pk).update(
        provider_status=exchange.status[:32], **_refund_fields(exchange)
    )
    status = exchange.status
    if status == "finished":
        if exchange.amount_to is None:
            return "finished without amountTo yet: waiting"
        kind.complete(order_id=order.pk, amount_to=exchange.amount_to, actor=actor)
        return f"completed: {exchange.amount_to}"
    if attention:
        _poll_later(kind, order)
        return f"exchange {status}: waiting for a person"
    if status in FAILED_STATUSES:
        return _needs_attention(
            kind,
            order.pk,
            f"exchange {exchange.id} is {status} after our deposit {transfer.tx_hash}"
            + (
                f"; ChangeNOW refunded {exchange.refund_amount} in {exchange.refund_hash}"
                if exchange.refund_hash
                else ""
            ),
            f"exchange_{status}",
            actor,
        )
    if status in MOVING_STATUSES and order.state == "funds_sent":
        transition(
            model=kind.model,
            pk=order.pk,
            to_state="converting",
            actor=actor,
            reason=f"exchange {status}",
            updates=_clear_retry(),
        )
        return status
    if status not in WAITING_STATUSES | MOVING_STATUSES:
        log.warning("unknown exchange status %r for %s", status, exchange.id)
        return f"unknown status {status!r}: recorded"
    return status


def _poll_attention(kind: OrderKind, order: Any, actor: Actor) -> str:
    if not order.exchange_id:
        return "nothing to poll"
    exchange = changenow().get_exchange(order.exchange_id)
    _read_ok(kind, order)
    record_status(current_attempt(kind, order), exchange)
    kind.model.objects.filter(pk=order.pk).update(
        provider_status=exchange.status[:32], **_refund_fields(exchange)
    )
    _poll_later(kind, order)
    return f"exchange {exchange.status}: waiting for a person"


def _poll_later(kind: OrderKind, order: Any) -> None:
    kind.model.objects.filter(pk=order.pk).update(
        next_attempt_at=timezone.now() + timedelta(seconds=BACKOFF_MAX_SECONDS)
    )


def _refund_fields(exchange: Exchange) -> dict[str, Any]:
    if not exchange.refund_hash and exchange.refund_amount is None:
        return {}
    return {
        "provider_refund_hash": (exchange.refund_hash or "")[:128],
        "provider_refund_amount": exchange.refund_amount,
    }


_STEPS = {
    "reserved": _step_reserved,
    "exchange_created": _step_exchange_created,
    "funds_sent": _step_in_flight,
    "converting": _step_in_flight,
    "needs_attention": _step_in_flight,
}


def orders_open(*, due_only: bool = True) -> list[tuple[str, object]]:
    """(kind, id) of every open order, and of every order needing attention that is polled
    because money may be in flight, oldest first."""
    now = timezone.now()
    found: list[tuple[str, object]] = []
    for name, kind in KINDS.items():
        polled = Q(state="needs_attention", next_attempt_at__isnull=False)
        qs = kind.model.objects.filter(Q(state__in=OPEN_STATES) | polled)
        if due_only:
            qs = qs.exclude(next_attempt_at__gt=now)
        found.extend((name, pk) for pk in qs.order_by("created_at").values_list("pk", flat=True))
    return found


class AdvanceErrors(Exception):
    """Some orders' steps raised; every other order was still advanced."""


def orders_advance_all(*, actor: Actor) -> list[StepResult]:
    """One step for every open order. An order whose step raises does not stop the others;
    the run then fails loudly, naming each order and its error."""
    results, errors = [], []
    try:
        for line in sending.wallet_maintain(actor=actor):
            log.info("wallet upkeep: %s", line)
    except Exception as exc:  # noqa: BLE001 - the orders still advance; reported below
        log.exception("wallet upkeep raised")
        errors.append(f"wallet upkeep: {type(exc).__name__}: {exc}")
    for kind, pk in orders_open():
        try:
            results.append(order_advance(kind=kind, order_id=pk, actor=actor))
        except Exception as exc:  # noqa: BLE001 - reported below, after the other orders
            log.exception("order step raised", extra={"order_id": str(pk), "kind": kind})
            errors.append(f"{kind} {pk}: {type(exc).__name__}: {exc}")
    if errors:
        raise AdvanceErrors("; ".join(errors)[:4000])
    return results


def order_find_by_exchange(exchange_id: str) -> tuple[str, object] | None:
    attempt = ExchangeAttempt.objects.filter(exchange_id=exchange_id).order_by("-id").first()
    if attempt is None:
        return None
    return ("batch", attempt.batch_id) if attempt.batch_id else ("payout", attempt.payout_id)
