"""Operator decisions on funded orders: sync, retry, force-close, force-complete.

Admin actions and the maintenance commands (`sync`, `retry`, `force_close`) call these; each
checks what it may do, says why when it refuses, and leaves an audit event with the actor and
the reason. None of them can send funds twice: sending stays in the engine, which reuses a
live transfer and its signed bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from integrations.errors import ProviderError
from payouts import engine
from payouts.models import Transfer
from payouts.transitions import Actor, audit_record, transition


class OperatorError(Exception):
    """The action is refused; the message says why (shown to the operator as is)."""


@dataclass(frozen=True)
class ActionResult:
    order_id: str
    done: bool
    detail: str


def _load(kind: str, order_id: object) -> tuple[engine.OrderKind, Any]:
    order_kind = engine.kind_get(kind)
    try:
        return order_kind, order_kind.model.objects.get(pk=order_id)
    except (order_kind.model.DoesNotExist, ValueError):
        raise OperatorError(f"no {kind} {order_id}") from None


def _object_type(kind: engine.OrderKind) -> str:
    return kind.model._meta.model_name or kind.name


def _require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise OperatorError("a reason is required")
    return reason


def _transfer_unsettled(kind: engine.OrderKind, order_id: object) -> Transfer | None:
    """A transfer that was signed or broadcast and is not known to be mined or reverted:
    it could still confirm."""
    transfer = engine.live_transfer(kind, order_id)
    if transfer is not None and transfer.state in (Transfer.State.SIGNED, Transfer.State.BROADCAST):
        return transfer
    return None


def order_sync(*, kind: str, order_id: object, actor: Actor) -> ActionResult:
    """Poll the provider now. Open orders take their next step at once (backoff ignored);
    an order needing attention only gets its exchange status recorded."""
    order_kind, order = _load(kind, order_id)
    if order.is_terminal:
        return ActionResult(str(order.pk), False, f"{order.state}: nothing to sync")
    if order.state != "needs_attention":
        result = engine.order_advance(kind=kind, order_id=order.pk, actor=actor, force=True)
        audit_record(
            object_type=_object_type(order_kind),
            object_id=order.pk,
            kind="synced",
            actor=actor,
            data={"from": result.from_state, "to": result.to_state, "note": result.note},
        )
        return ActionResult(str(order.pk), True, f"{result.from_state} -> {result.to_state}")
    if not order.exchange_id:
        return ActionResult(str(order.pk), False, "no exchange to poll")
    try:
        exchange = engine.changenow().get_exchange(order.exchange_id)
    except ProviderError as exc:
        return ActionResult(str(order.pk), False, f"ChangeNOW did not answer: {exc}")
    engine.record_status(engine.current_attempt(order_kind, order), exchange)
    order_kind.model.objects.filter(pk=order.pk).update(provider_status=exchange.status[:32])
    audit_record(
        object_type=_object_type(order_kind),
        object_id=order.pk,
        kind="synced",
        actor=actor,
        data={"exchange_status": exchange.status, "amount_to": exchange.amount_to},
    )
    return ActionResult(str(order.pk), True, f"exchange is {exchange.status}")


def order_retry(*, kind: str, order_id: object, actor: Actor, reason: str) -> ActionResult:
    """Put an order that stopped back on its way, at the step it can safely resume from:
    a live transfer is followed (never replaced), an exchange without our funds is funded
    after a fresh status check, an order without an exchange gets a new one."""
    reason = _require_reason(reason)
    order_kind, order = _load(kind, order_id)
    if order.is_terminal:
        raise OperatorError(f"{order.state} orders cannot be retried")
    transfer = engine.live_transfer(order_kind, order.pk)
    if transfer is not None and transfer.state in (Transfer.State.BROADCAST, Transfer.State.MINED):
        target = "funds_sent"
    elif transfer is not None or order.exchange_id:
        target = "exchange_created"
    else:
        target = "reserved"
    updates = {"retry_count": 0, "next_attempt_at": None}
    if order.state == "needs_attention":
        if target == "reserved":
            raise OperatorError(
                "no exchange was created for this order: force-close it to release its rows"
            )
        transition(
            model=order_kind.model,
            pk=order.pk,
            to_state=target,
            actor=actor,
            reason=reason,
            updates=updates,
            data={"action": "retry"},
        )
    else:
        order_kind.model.objects.filter(pk=order.pk).update(**updates)
        audit_record(
            object_type=_object_type(order_kind),
            object_id=order.pk,
            kind="retry",
            actor=actor,
            reason=reason,
            data={"state": order.state},
        )
    result = engine.order_advance(kind=kind, order_id=order.pk, actor=actor, force=True)
    return ActionResult(
        str(order.pk), True, f"resumed at {target}: {result.note or result.to_state}"
    )


def order_force_close(
    *,
    kind: str,
    order_id: object,
    actor: Actor,
    reason: str,
    write_off: bool = False,
    chain_checked: bool = False,
) -> ActionResult:
    """Close an order for good. Its rows go back to the previous state (swept again) or are
    written off. Refused while a transaction we broadcast could still confirm, unless the
    operator states having checked the chain (recorded)."""
    reason = _require_reason(reason)
    order_kind, order = _load(kind, order_id)
    if order.is_terminal:
        raise OperatorError(f"already {order.state}")
    unsettled = _transfer_unsettled(order_kind, order.pk)
    if unsettled is not None and not chain_checked:
        raise OperatorError(
            f"transaction {unsettled.tx_hash} could still confirm: check the chain and confirm "
            "that you did"
        )
    audit_record(
        object_type=_object_type(order_kind),
        object_id=order.pk,
        kind="force_close_requested",
        actor=actor,
        reason=reason,
        data={
            "write_off": write_off,
            "chain_checked": chain_checked,
            "unsettled_tx": unsettled.tx_hash if unsettled else "",
        },
    )
    if unsettled is not None:
        Transfer.objects.filter(pk=unsettled.pk).update(
            state=Transfer.State.ABANDONED,
            note=f"abandoned by {actor.name} at {timezone.now().isoformat()}: {reason}",
        )
    rows = order_kind.release_and_close(
        order_id=order.pk, to_state="force_closed", actor=actor, reason=reason, write_off=write_off
    )
    what = "written off" if write_off else "released"
    return ActionResult(str(order.pk), True, f"force-closed, {rows} rows {what}")


def order_force_complete(*, kind: str, order_id: object, actor: Actor, reason: str) -> ActionResult:
    """Complete an order from the provider's own word, read live now: ChangeNOW must say
    `finished` with an amountTo (a direct payout: its transfer mined successfully)."""
    reason = _require_reason(reason)
    order_kind, order = _load(kind, order_id)
    if order.is_terminal:
        raise OperatorError(f"already {order.state}")
    if order_kind.exchange_spec(order) is None:
        transfer = engine.live_transfer(order_kind, order.pk)
        if transfer is None or not engine.check_receipt(engine.wallet(), transfer):
            raise OperatorError("the transfer is not mined successfully: cannot complete")
        amount_to = transfer.amount
    else:
        if not order.exchange_id:
            raise OperatorError("no exchange: nothing to complete from")
        try:
            exchange = engine.changenow().get_exchange(order.exchange_id)
        except ProviderError as exc:
            raise OperatorError(f"ChangeNOW did not answer: {exc}") from exc
        if exchange.status != "finished" or exchange.amount_to is None:
            raise OperatorError(
                f"ChangeNOW says {exchange.status!r} (amountTo {exchange.amount_to}): only a "
                "finished exchange can be completed"
            )
        amount_to = exchange.amount_to
    audit_record(
        object_type=_object_type(order_kind),
        object_id=order.pk,
        kind="force_complete_requested",
        actor=actor,
        reason=reason,
        data={"amount_to": amount_to},
    )
    try:
        order_kind.complete(order_id=order.pk, amount_to=amount_to, actor=actor)
    except engine.EngineError as exc:
        raise OperatorError(str(exc)) from exc
    return ActionResult(str(order.pk), True, f"completed with {amount_to}")
