"""The funded-order engine: one idempotent step at a time for batches and payouts.

    reserved -> exchange_created -> funds_sent -> converting -> completed

Rules it keeps (DESIGN.md sections 5 and 7):
- One step per call, under a per-order session advisory lock (released by PostgreSQL if the
  process dies), so several clusters can run it at once; a killed step is finished by the
  next call without doing anything twice.
- The attempt is recorded before a provider is called; providers are called outside any
  transaction; outcomes are recorded in new short transactions through `transition()`.
- Funds leave only through `_send_funds`: under the host-wallet lock, a transfer intent with
  its nonce is written first, then the signed bytes, then the broadcast; a retry re-sends the
  same bytes. Funds go only to the payin address stored with the exchange.
- Transient errors back off (capped, visible on the order); permanent ones record the code;
  anything uncertain after funds may have left goes to `needs_attention`, never backwards.

The two kinds plug in through `OrderKind` (batches registers its own at start-up), so this
module never imports the batches app.
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from integrations.changenow.client import ChangeNowClient
from integrations.changenow.types import Exchange
from integrations.errors import ProviderError, WalletError, WalletErrorKind
from integrations.wallet.client import WalletClient
from payouts.models import ExchangeAttempt, FundedOrder, Transfer
from payouts.transitions import Actor, audit_record, transition

log = logging.getLogger("payouts.engine")

MAX_RETRIES = 8
BACKOFF_BASE_SECONDS = 15
BACKOFF_MAX_SECONDS = 15 * 60
# A fixed-rate exchange must not be funded this close to its validUntil.
VALID_UNTIL_MARGIN = timedelta(seconds=60)
WALLET_LOCK_TIMEOUT_MS = 30_000

# Retrying cannot fix these: the nonce went to another transaction, or the signer signed
# something else, or we talk to the wrong chain.
UNRECOVERABLE_WALLET_ERRORS = frozenset(
    {WalletErrorKind.NONCE_TOO_LOW, WalletErrorKind.SIGNER_MISMATCH, WalletErrorKind.WRONG_CHAIN}
)
WAITING_STATUSES = frozenset({"new", "waiting"})
MOVING_STATUSES = frozenset({"confirming", "exchanging", "sending", "verifying"})
FAILED_STATUSES = frozenset({"failed", "refunded", "expired"})
OPEN_STATES = ("reserved", "exchange_created", "funds_sent", "converting")
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
    # The name of the link to this kind on ExchangeAttempt and Transfer.
    link_field: str

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

    @abstractmethod
    def release_and_close(
        self, *, order_id: Any, to_state: str, actor: Actor, reason: str, write_off: bool = False
    ) -> int:
        """Move the order to `failed` / `force_closed` and, together, release its rows to the
        previous state (or write them off)."""


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


def wallet() -> WalletClient:
    return WalletClient.from_settings()


def host_address() -> str:
    address = settings.HOST_WALLET_ADDRESS
    if not address:
        raise EngineError("HOST_WALLET_ADDRESS is not configured")
    return address


# --- locks --------------------------------------------------------------------------------


def _lock_key(namespace: str, value: str) -> int:
    # Two 32-bit halves: a namespace and a stable hash of the id.
    return (zlib.crc32(namespace.encode()) << 31) ^ zlib.crc32(value.encode())


@contextlib.contextmanager
def order_lock(kind: str, order_id: object) -> Iterator[bool]:
    """A session-level advisory lock for one order; yields False when someone else has it."""
    key = _lock_key(f"order:{kind}", str(order_id))
    with connection.cursor() as cur:
        cur.execute("SELECT pg_try_advisory_lock(%s)", [key])
        got = bool(cur.fetchone()[0])
    try:
        yield got
    finally:
        if got:
            with connection.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", [key])


@contextlib.contextmanager
def wallet_lock() -> Iterator[None]:
    """Single flight for the host wallet: nonces are handed out one at a time."""
    key = _lock_key("wallet", settings.HOST_WALLET_ADDRESS.lower())
    with connection.cursor() as cur:
        cur.execute(f"SET lock_timeout = {WALLET_LOCK_TIMEOUT_MS}")
        try:
            cur.execute("SELECT pg_advisory_lock(%s)", [key])
        finally:
            cur.execute("SET lock_timeout = 0")
    try:
        yield
    finally:
        with connection.cursor() as cur:
            cur.execute("SELECT pg_advisory_unlock(%s)", [key])


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
        if before not in OPEN_STATES:
            return StepResult(str(order.pk), kind, before, before, "not open")
        if not force and order.next_attempt_at and order.next_attempt_at > timezone.now():
            return StepResult(str(order.pk), kind, before, before, "backing off")
        note = ""
        try:
            note = _STEPS[before](order_kind, order, actor) or ""
        except ProviderError as exc:
            note = _provider_failure(order_kind, order.pk, exc, actor)
        except EngineError as exc:
            note = _needs_attention(order_kind, order.pk, str(exc), "engine", actor)
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


def _note_error(kind: OrderKind, order_id: object, exc: ProviderError, actor: Actor) -> int:
    """Record a transient failure and schedule the retry; returns the retry count."""
    with transaction.atomic():
        order = kind.model.objects.select_for_update().get(pk=order_id)
        order.retry_count += 1
        base = getattr(settings, "ENGINE_BACKOFF_BASE_SECONDS", BACKOFF_BASE_SECONDS)
        delay = min(base * 2 ** (order.retry_count - 1), BACKOFF_MAX_SECONDS)
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


def _has_sent_funds(kind: OrderKind, order_id: object) -> bool:
    field = kind.link_field
    return (
        Transfer.objects.filter(**{field: order_id})
        .exclude(state__in=[Transfer.State.INTENT, Transfer.State.ABANDONED])
        .exists()
    )


def _provider_failure(kind: OrderKind, order_id: object, exc: ProviderError, actor: Actor) -> str:
    order = kind.model.objects.get(pk=order_id)
    if isinstance(exc, WalletError) and exc.code in UNRECOVERABLE_WALLET_ERRORS:
        return _needs_attention(kind, order_id, str(exc), exc.code, actor)
    if exc.transient or isinstance(exc, WalletError):
        # Wallet trouble (signer down, not enough balance) is never a reason to give up the
        # order by itself: an operator fixes the wallet, the engine goes on.
        count = _note_error(kind, order_id, exc, actor)
        if count < MAX_RETRIES:
            return f"retry {count}/{MAX_RETRIES}: {exc.code}"
        return _needs_attention(kind, order_id, f"retries exhausted: {exc}", exc.code, actor)
    if order.state in PRE_FUNDS_STATES and not _has_sent_funds(kind, order_id):
        kind.release_and_close(
            order_id=order_id, to_state="failed", actor=actor, reason=f"{exc.code}: {exc}"
        )
        _set_error(kind, order_id, exc.code, str(exc))
        return f"failed: {exc.code}"
    return _needs_attention(kind, order_id, str(exc), exc.code, actor)


def _set_error(kind: OrderKind, order_id: object, code: str, message: str) -> None:
    kind.model.objects.filter(pk=order_id).update(
        last_error=message[:2000], last_error_code=code[:48]
    )


def _needs_attention(
    kind: OrderKind, order_id: object, reason: str, code: str, actor: Actor
) -> str:
    transition(
        model=kind.model,
        pk=order_id,
        to_state="needs_attention",
        actor=actor,
        reason=reason[:2000],
        updates={
            "last_error": reason[:2000],
            "last_error_code": code[:48],
            "next_attempt_at": None,
        },
        data={"code": code},
    )
    return f"needs attention: {reason[:200]}"


# reserved ---------------------------------------------------------------------------------


def _step_reserved(kind: OrderKind, order: Any, actor: Actor) -> str:
    spec = kind.exchange_spec(order)
    if spec is None:
        return _send_funds(kind, order, actor, to=kind.direct_destination(order))
    client = changenow()
    minimum = client.get_min_amount(
        spec.from_currency,
        spec.to_currency,
        from_network=spec.from_network,
        to_network=spec.to_network,
    )
    if spec.amount_from < minimum:
        kind.release_and_close(
            order_id=order.pk,
            to_state="failed",
            actor=actor,
            reason=f"{spec.amount_from} {spec.from_currency} is below ChangeNOW's minimum "
            f"{minimum}: rows released to wait for more",
        )
        _set_error(kind, order.pk, "below_minimum", f"below the exchange minimum {minimum}")
        return "failed: below_minimum"
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
        raise
    if not created.payin_address:
        raise EngineError(f"exchange {created.id} was created without a payin address")
    if created.from_amount is not None and created.from_amount != spec.amount_from:
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
    record_status(current_attempt(kind, order), exchange)
    live = live_transfer(kind, order.pk)
    if live is not None and exchange.status in WAITING_STATUSES:
        # A send was begun (perhaps by a worker that died): finish that one, never a new one.
        return _send_funds(kind, order, actor, to=order.payin_address)
    if live is not None:
        if live.state != Transfer.State.INTENT and wallet().get_transaction(live.tx_hash):
            # Our transaction is out there: follow it like any deposit (the in-flight step
            # sends the order to needs_attention if the exchange will not take it).
            return _send_funds(kind, order, actor, to=order.payin_address)
        # Never broadcast (the node does not know it): it can be dropped safely, and its
        # nonce will be taken by the next transaction, so these bytes can never be mined.
        Transfer.objects.filter(pk=live.pk).update(
            state=Transfer.State.ABANDONED,
            note=f"exchange {exchange.status} before broadcast; never sent",
        )
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
    if exchange.valid_until and timezone.now() >= exchange.valid_until - VALID_UNTIL_MARGIN:
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


# sending funds: the only code that moves money --------------------------------------------


def live_transfer(kind: OrderKind, order_id: object) -> Transfer | None:
    field = kind.link_field
    return (
        Transfer.objects.filter(**{field: order_id}, state__in=Transfer.LIVE)
        .order_by("-id")
        .first()
    )


def _next_nonce(client: WalletClient, address: str, chain_id: int) -> int:
    """The node's pending count, but never below a nonce we already handed out and that is
    not mined yet (the node may not have seen it)."""
    node = client.get_nonce(address, "pending")
    ours = (
        Transfer.objects.filter(
            from_address=address, chain_id=chain_id, state__in=("intent", "signed", "broadcast")
        )
        .order_by("-nonce")
        .values_list("nonce", flat=True)
        .first()
    )
    return max(node, ours + 1) if ours is not None else node


def _send_funds(kind: OrderKind, order: Any, actor: Actor, *, to: str) -> str:
    funding = kind.funding(order)
    if not to:
        raise EngineError("no destination address stored: refusing to send")
    client = wallet()
    sender = host_address()
    field = kind.link_field
    with wallet_lock():
        transfer = live_transfer(kind, order.pk)
        if transfer is None:
            chain_id = client.chain_id()
            nonce = _next_nonce(client, sender, chain_id)
            attempts = Transfer.objects.filter(**{field: order.pk}).count()
            taken = Transfer.objects.filter(
                from_address=sender, chain_id=chain_id, nonce=nonce, state__in=Transfer.LIVE
            ).first()
            if taken is not None:
                raise EngineError(
                    f"the node's next nonce {nonce} on chain {chain_id} is already used by our "
                    f"transfer {taken.tx_hash or taken.pk}: the node is behind our books "
                    "(restored or replaced node?); refusing to sign"
                )
            transfer = Transfer.objects.create(
                **{field: order},
                attempt=attempts + 1,
                asset=funding.asset,
                amount=funding.amount,
                to_address=to,
                from_address=sender,
                chain_id=chain_id,
                nonce=nonce,
            )
            audit_record(
                object_type=kind.model._meta.model_name or kind.name,
                object_id=order.pk,
                kind="transfer_intent",
                actor=actor,
                data={
                    "asset": funding.asset,
                    "amount": funding.amount,
                    "to": to,
                    "nonce": nonce,
                    "attempt": transfer.attempt,
                },
            )
        if (transfer.asset, transfer.amount, transfer.to_address) != (
            funding.asset,
            funding.amount,
            to,
        ):
            raise EngineError(
                f"stored transfer {transfer.pk} ({transfer.amount} {transfer.asset} to "
                f"{transfer.to_address}) does not match the order: refusing to send"
            )
        if transfer.state == Transfer.State.INTENT:
            # Signing again with the same nonce is safe: at most one can ever be mined, and
            # only stored bytes are ever broadcast.
            if transfer.asset == "eth":
                request = client.build_eth_transfer(to, transfer.amount, nonce=transfer.nonce)
            else:
                request = client.build_erc20_transfer(
                    to, transfer.amount, nonce=transfer.nonce, asset=transfer.asset
                )
            signed = client.sign(request)
            Transfer.objects.filter(pk=transfer.pk, state="intent").update(
                state="signed", raw_tx=signed.raw, tx_hash=signed.hash, signed_at=timezone.now()
            )
            transfer.refresh_from_db()
        if transfer.state in (Transfer.State.SIGNED, Transfer.State.BROADCAST):
            client.broadcast(transfer.raw_tx)
            now = timezone.now()
            Transfer.objects.filter(pk=transfer.pk).update(
                state="broadcast" if transfer.state == "signed" else transfer.state,
                broadcast_at=transfer.broadcast_at or now,
                broadcast_count=transfer.broadcast_count + 1,
            )
    transition(
        model=kind.model,
        pk=order.pk,
        to_state="funds_sent",
        actor=actor,
        reason=f"sent {transfer.amount} {transfer.asset}",
        updates=_clear_retry(),
        data={"tx_hash": transfer.tx_hash, "nonce": transfer.nonce, "to": to},
    )
    return f"sent {transfer.tx_hash}"


def check_receipt(client: WalletClient, transfer: Transfer) -> bool | None:
    """True mined ok, False reverted, None not mined yet (re-broadcast the same bytes)."""
    if transfer.state == Transfer.State.MINED:
        return True
    receipt = client.get_receipt(transfer.tx_hash)
    if receipt is None:
        with contextlib.suppress(WalletError):
            client.broadcast(transfer.raw_tx)
        return None
    state = Transfer.State.MINED if receipt.succeeded else Transfer.State.REVERTED
    Transfer.objects.filter(pk=transfer.pk).update(
        state=state, block_number=receipt.block_number, mined_at=timezone.now()
    )
    return receipt.succeeded


# funds_sent / converting ------------------------------------------------------------------


def _step_in_flight(kind: OrderKind, order: Any, actor: Actor) -> str:
    transfer = live_transfer(kind, order.pk)
    if transfer is None:
        raise EngineError("order is marked funds_sent but has no live transfer")
    client = wallet()
    mined = check_receipt(client, transfer)
    if mined is False:
        raise EngineError(f"transfer {transfer.tx_hash} reverted on chain")
    if kind.exchange_spec(order) is None:
        if mined:
            kind.complete(order_id=order.pk, amount_to=transfer.amount, actor=actor)
            return "completed (direct transfer mined)"
        return "waiting for the transfer to be mined"
    exchange = changenow().get_exchange(order.exchange_id)
    record_status(current_attempt(kind, order), exchange)
    kind.model.objects.filter(pk=order.pk).update(provider_status=exchange.status[:32])
    status = exchange.status
    if status == "finished":
        if exchange.amount_to is None:
            return "finished without amountTo yet: waiting"
        kind.complete(order_id=order.pk, amount_to=exchange.amount_to, actor=actor)
        return f"completed: {exchange.amount_to}"
    if status in FAILED_STATUSES:
        return _needs_attention(
            kind,
            order.pk,
            f"exchange {exchange.id} is {status} after our deposit {transfer.tx_hash}",
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


_STEPS = {
    "reserved": _step_reserved,
    "exchange_created": _step_exchange_created,
    "funds_sent": _step_in_flight,
    "converting": _step_in_flight,
}


def orders_open(*, due_only: bool = True) -> list[tuple[str, object]]:
    """(kind, id) of every open order, oldest first."""
    now = timezone.now()
    found: list[tuple[str, object]] = []
    for name, kind in KINDS.items():
        qs = kind.model.objects.filter(state__in=OPEN_STATES)
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
