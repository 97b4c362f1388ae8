"""Operator decisions on funded orders: sync, retry, force-close (release with proof or
write off), force-complete, replace or cancel a stuck transfer, ask ChangeNOW for a refund
or to continue.

Admin actions and the maintenance commands call these; the admin's confirmation pages and
the commands' refusals show the text `order_plan` returns, so what a person is told and
what the action does come from one place. Every action takes the same per-order lock as an
engine step and refuses with "busy" while a step holds it, changing nothing; each leaves an
audit event with the actor and the reason. None of them can send funds twice: sending stays
in the engine, which reuses a live transfer and its signed bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from integrations.assets import format_amount
from integrations.errors import ProviderError
from payouts import engine, sending
from payouts.locks import order_lock
from payouts.models import ExchangeAttempt, Transfer
from payouts.recovery import (
    FundsCheck,
    ProofError,
    RefundProof,
    funds_check,
    order_release_and_close,
    refund_verify,
)
from payouts.transitions import Actor, audit_record, transition


class OperatorError(Exception):
    """The action is refused; the message says why (shown to the operator as is)."""


class OperatorBusy(OperatorError):
    """An engine step (or another person) holds the order right now: nothing was done."""


@dataclass(frozen=True)
class ActionResult:
    order_id: str
    done: bool
    detail: str
    data: dict[str, Any] | None = None


@dataclass(frozen=True)
class Plan:
    """What an action will do to one order, or why it is refused (and what would unblock it)."""

    allowed: bool
    effect: str
    refusal: str = ""


ACTIONS = (
    "sync",
    "retry",
    "force_close",
    "force_complete",
    "speed_up",
    "cancel",
    "refund",
    "continue",
)


def _load(kind: str, order_id: object) -> tuple[engine.OrderKind, Any]:
    order_kind = engine.kind_get(kind)
    try:
        return order_kind, order_kind.model.objects.get(pk=order_id)
    except (order_kind.model.DoesNotExist, ValueError, TypeError):
        raise OperatorError(f"no {kind} {order_id}") from None
    except Exception as exc:  # a malformed id (not a UUID) is the operator's typo
        if "uuid" in str(exc).lower():
            raise OperatorError(f"no {kind} {order_id}") from None
        raise


def _object_type(kind: engine.OrderKind) -> str:
    return kind.model._meta.model_name or kind.name


def _require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise OperatorError("a reason is required")
    return reason


@contextmanager
def _holding(kind: str, order_id: object) -> Iterator[None]:
    with order_lock(kind, order_id) as got:
        if not got:
            raise OperatorBusy(
                f"busy: an engine step is working on {kind} {str(order_id)[:8]} right now; "
                "nothing was changed, try again in a moment"
            )
        yield


def _pending_transfer(kind: engine.OrderKind, order_id: object) -> Transfer | None:
    return (
        Transfer.objects.filter(**{kind.link_field: order_id}, state__in=Transfer.PENDING)
        .order_by("-id")
        .first()
    )


# --- what an action would do --------------------------------------------------------------


def order_plan(
    *,
    kind: str,
    order_id: object,
    action: str,
    write_off: bool = False,
    refund_tx: str = "",
    check_chain: bool = True,
) -> Plan:
    """Say what `action` would do to the order now, or why it is refused. `check_chain`
    reads the chain for force-close (a page listing many orders may skip it)."""
    order_kind, order = _load(kind, order_id)
    if action not in ACTIONS:
        return Plan(False, "Nothing.", f"unknown action {action!r}")
    if order.is_terminal and action != "cancel":
        return Plan(False, "Nothing.", f"the order is already {order.state}")
    return _PLANNERS[action](
        order_kind, order, write_off=write_off, refund_tx=refund_tx, check_chain=check_chain
    )


def _plan_sync(kind: engine.OrderKind, order: Any, **_: Any) -> Plan:
    if order.state == "needs_attention":
        if not order.exchange_id and not engine.money_in_flight(kind, order.pk):
            return Plan(False, "Nothing.", "no exchange and no transaction to read")
        return Plan(
            True,
            f"Reads exchange {order.exchange_id or '(none)'} and the order's transaction from "
            "ChangeNOW and the chain and records what they say; a finished exchange completes "
            "the order, anything else leaves it waiting for a person.",
        )
    step = {
        "reserved": "creates the ChangeNOW exchange"
        if kind.exchange_spec(order) is not None
        else f"SENDS {kind.funding(order).amount} {kind.funding(order).asset.upper()} from "
        "the host wallet to the client",
        "exchange_created": f"checks exchange {order.exchange_id} is still waiting and then "
        f"SENDS the funds from the host wallet to {order.payin_address}",
        "funds_sent": "reads the exchange and transaction status",
        "converting": "reads the exchange status and completes the order if it finished",
    }.get(order.state, "runs the next step")
    return Plan(True, f"Runs the next step now: {step}.")


def _retry_target(kind: engine.OrderKind, order: Any) -> str:
    live = engine.live_transfer(kind, order.pk)
    if live is not None and live.state in (Transfer.State.BROADCAST, Transfer.State.MINED):
        return "funds_sent"
    if live is not None or order.exchange_id:
        return "exchange_created"
    return "reserved"


def _plan_retry(kind: engine.OrderKind, order: Any, **_: Any) -> Plan:
    target = _retry_target(kind, order)
    if order.state == "needs_attention" and target == "reserved":
        return Plan(
            False,
            "Nothing.",
            "no exchange was created for this order: force-close it to release its rows",
        )
    if target == "funds_sent":
        live = engine.live_transfer(kind, order.pk)
        return Plan(
            True,
            f"Resumes at funds_sent: follows transaction {live.tx_hash if live else ''} "
            "(re-broadcast with the same signed bytes if needed). No new send.",
        )
    if target == "exchange_created":
        return Plan(
            True,
            f"Resumes at exchange_created: re-reads exchange {order.exchange_id} and sends "
            "funds only if it is still waiting for them (reusing any signed transaction).",
        )
    return Plan(True, "Clears the backoff and creates the exchange now.")


def _plan_force_close(
    kind: engine.OrderKind,
    order: Any,
    *,
    write_off: bool,
    refund_tx: str,
    check_chain: bool,
    **_: Any,
) -> Plan:
    rows = f"{order.row_count} rows"
    if write_off:
        return Plan(
            True,
            f"Closes the order for good and WRITES OFF its {rows}: the clients' claim on them "
            "is cancelled and they will never be paid. Any transaction still pending stays "
            "tracked on chain.",
        )
    back_to = kind.release_state
    if not check_chain:
        return Plan(
            True,
            f"Closes the order and releases its {rows} to {back_to}, if the chain proves no "
            "funds left (checked when you confirm).",
        )
    try:
        funds = funds_check(kind=kind, order_id=order.pk)
    except ProviderError as exc:
        return Plan(False, "Nothing.", f"the chain could not be read to prove it: {exc}")
    if not funds.may_have_left:
        return Plan(
            True,
            f"Closes the order and releases its {rows} to {back_to} (picked up by the next "
            f"sweep): no funds left the host wallet ({funds.detail}).",
        )
    if refund_tx:
        try:
            proof = refund_verify(kind=kind, order=order, tx_hash=refund_tx)
        except (ProofError, ProviderError) as exc:
            return Plan(False, "Nothing.", f"the refund is not proved: {exc}")
        return Plan(
            True,
            f"Closes the order and releases its {rows} to {back_to} at full value. Refund "
            f"{proof.tx_hash[:12]}… brought back {proof.amount} {proof.asset.upper()} of the "
            f"{proof.deposit} deposited; the shortfall of {proof.shortfall} is booked as a "
            "platform loss.",
        )
    return Plan(False, "Nothing.", _release_refusal(funds))


def _release_refusal(funds: FundsCheck) -> str:
    pending = [t for t in funds.open_transfers if t[3] in Transfer.PENDING]
    if pending:
        _, tx_hash, nonce, state = pending[0]
        return (
            f"funds may have left: transaction {tx_hash} (nonce {nonce}) is {state} and could "
            "still be mined. Cancel it first (replace_transfer --cancel, or the Cancel action): "
            "once the cancel is mined and final the rows can be released; or write them off"
        )
    return (
        f"funds left the host wallet ({funds.detail}). Releasing the rows needs a proved "
        "refund: the hash of ChangeNOW's refund to the host wallet (--refund-tx HASH; "
        "ChangeNOW must report the exchange refunded with that refundHash, and it must be "
        "mined and final). Or write the rows off"
    )


def _plan_force_complete(kind: engine.OrderKind, order: Any, **_: Any) -> Plan:
    if kind.exchange_spec(order) is None:
        return Plan(
            True,
            "Completes the payout if its transfer is mined, final and moved the USDT (read "
            "from the chain now); its rows become paid.",
        )
    if not order.exchange_id:
        return Plan(False, "Nothing.", "no exchange: nothing to complete from")
    return Plan(
        True,
        f"Completes the order from ChangeNOW's own word, read now: only if exchange "
        f"{order.exchange_id} says finished with an amount.",
    )


def _plan_replace(kind: engine.OrderKind, order: Any, *, cancel: bool) -> Plan:
    pending = _pending_transfer(kind, order.pk)
    if pending is None:
        return Plan(False, "Nothing.", "the order has no pending transfer to replace")
    if cancel:
        return Plan(
            True,
            f"Signs a zero-value transfer from the host wallet to itself at nonce "
            f"{pending.nonce}, with both fee caps raised at least 12.5%: once it mines, "
            f"transaction {pending.tx_hash} can never be mined and the rows can be released.",
        )
    if order.is_terminal:
        return Plan(False, "Nothing.", f"the order is {order.state}: only a cancel is possible")
    if sending.transfer_has_cancel(pending):
        return Plan(False, "Nothing.", sending.CANCEL_SIGNED.format(nonce=pending.nonce))
    return Plan(
        True,
        f"Re-signs transaction {pending.tx_hash} (nonce {pending.nonce}) with both fee caps "
        "raised at least 12.5% (never above the fee ceiling) and broadcasts it; whichever of "
        "the two mines is recorded.",
    )


def _plan_provider_action(kind: engine.OrderKind, order: Any, *, which: str) -> Plan:
    if not order.exchange_id:
        return Plan(False, "Nothing.", "no exchange")
    try:
        actions = engine.changenow().get_actions(order.exchange_id)
    except ProviderError as exc:
        return Plan(False, "Nothing.", f"ChangeNOW did not answer: {exc}")
    offered = actions.refund if which == "refund" else actions.continue_
    if not offered:
        return Plan(False, "Nothing.", f"ChangeNOW does not offer a {which} for this exchange")
    if which == "refund":
        return Plan(
            True,
            f"Asks ChangeNOW to refund exchange {order.exchange_id} to the host wallet "
            f"{sending.host_address()}. When the refund is mined, force-close with its hash "
            "to release the rows.",
        )
    return Plan(True, f"Asks ChangeNOW to continue exchange {order.exchange_id}.")


_PLANNERS = {
    "sync": _plan_sync,
    "retry": _plan_retry,
    "force_close": _plan_force_close,
    "force_complete": _plan_force_complete,
    "speed_up": lambda k, o, **_: _plan_replace(k, o, cancel=False),
    "cancel": lambda k, o, **_: _plan_replace(k, o, cancel=True),
    "refund": lambda k, o, **_: _plan_provider_action(k, o, which="refund"),
    "continue": lambda k, o, **_: _plan_provider_action(k, o, which="continue"),
}


# --- the actions --------------------------------------------------------------------------


def order_sync(*, kind: str, order_id: object, actor: Actor) -> ActionResult:
    """Poll the providers now and report what they said and what changed."""
    order_kind, order = _load(kind, order_id)
    if order.is_terminal:
        return ActionResult(str(order.pk), False, f"{order.state}: nothing to sync")
    with _holding(kind, order.pk):
        result = engine.order_advance(kind=kind, order_id=order.pk, actor=actor, force=True)
        order.refresh_from_db()
        audit_record(
            object_type=_object_type(order_kind),
            object_id=order.pk,
            kind="synced",
            actor=actor,
            data={"from": result.from_state, "to": result.to_state, "note": result.note},
        )
    moved = (
        f"{result.from_state} → {result.to_state}" if result.moved else f"still {result.to_state}"
    )
    detail = "; ".join(part for part in (_provider_said(order), moved, result.note) if part)
    return ActionResult(str(order.pk), True, detail)


def _provider_said(order: Any) -> str:
    """What ChangeNOW reported for the order's current exchange, with its amounts, as stored
    by the step that just polled it (one status source: the attempt)."""
    if not order.exchange_id:
        return ""
    attempt = ExchangeAttempt.objects.filter(exchange_id=order.exchange_id).order_by("-id").first()
    if attempt is None:
        return f"ChangeNOW says {order.provider_status}" if order.provider_status else ""
    parts = [f"ChangeNOW says {attempt.status} for exchange {attempt.exchange_id}"]
    parts.append(f"{format_amount(attempt.amount_from)} {attempt.from_currency.upper()} in")
    if attempt.amount_to is not None:
        parts.append(f"{format_amount(attempt.amount_to)} {attempt.to_currency.upper()} out")
    elif attempt.expected_amount_to is not None:
        parts.append(
            f"about {format_amount(attempt.expected_amount_to)} {attempt.to_currency.upper()} "
            "expected out"
        )
    return ", ".join(parts)


def order_retry(*, kind: str, order_id: object, actor: Actor, reason: str) -> ActionResult:
    """Put an order that stopped back on its way, at the step it can safely resume from:
    a live transfer is followed (never replaced), an exchange without our funds is funded
    after a fresh status check, an order without an exchange gets a new one."""
    reason = _require_reason(reason)
    order_kind, order = _load(kind, order_id)
    with _holding(kind, order.pk):
        order.refresh_from_db()
        plan = order_plan(kind=kind, order_id=order.pk, action="retry")
        if not plan.allowed:
            raise OperatorError(plan.refusal)
        target = _retry_target(order_kind, order)
        updates = {"retry_count": 0, "next_attempt_at": None}
        if order.state == "needs_attention":
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
    refund_tx: str = "",
) -> ActionResult:
    """Close an order for good. Its rows are released (only when the chain proves no funds
    left, or with a proved refund) or written off (always possible, with a reason)."""
    reason = _require_reason(reason)
    order_kind, order = _load(kind, order_id)
    with _holding(kind, order.pk):
        order.refresh_from_db()
        if order.is_terminal:
            raise OperatorError(f"already {order.state}")
        proof: RefundProof | None = None
        funds: FundsCheck | None = None
        if not write_off:
            try:
                funds = funds_check(kind=order_kind, order_id=order.pk)
            except ProviderError as exc:
                raise OperatorError(f"the chain could not be read to prove it: {exc}") from exc
            if funds.may_have_left:
                if not refund_tx:
                    raise OperatorError(_release_refusal(funds))
                try:
                    proof = refund_verify(kind=order_kind, order=order, tx_hash=refund_tx)
                except ProofError as exc:
                    raise OperatorError(f"the refund is not proved: {exc}") from exc
        audit_record(
            object_type=_object_type(order_kind),
            object_id=order.pk,
            kind="force_close_requested",
            actor=actor,
            reason=reason,
            data={
                "write_off": write_off,
                "refund_tx": proof.tx_hash if proof else "",
                "funds": funds.detail if funds else "not checked (write-off)",
            },
        )
        updates: dict[str, Any] = {}
        data: dict[str, Any] = {"action": "force_close"}
        if proof is not None:
            updates = {
                "refund_tx_hash": proof.tx_hash,
                "refund_received": proof.amount,
                "loss_amount": proof.shortfall,
                "loss_asset": proof.asset,
            }
            data |= {
                "refund_tx": proof.tx_hash,
                "refund": proof.amount,
                "deposit": proof.deposit,
                "loss": proof.shortfall,
                "exchange_id": proof.exchange_id,
            }
        released = order_release_and_close(
            kind=order_kind,
            order_id=order.pk,
            to_state="force_closed",
            actor=actor,
            reason=reason,
            write_off=write_off,
            updates=updates,
            data=data,
        )
    what = "written off" if write_off else f"released to {order_kind.release_state}"
    detail = f"force-closed, {released.rows} rows {what}"
    if proof is not None:
        detail += f"; refund {proof.amount} {proof.asset.upper()}, loss {proof.shortfall}"
    return ActionResult(str(order.pk), True, detail)


def order_force_complete(*, kind: str, order_id: object, actor: Actor, reason: str) -> ActionResult:
    """Complete an order from the provider's own word, read live now: ChangeNOW must say
    `finished` with an amountTo (a direct payout: its transfer mined, final and effective)."""
    reason = _require_reason(reason)
    order_kind, order = _load(kind, order_id)
    with _holding(kind, order.pk):
        order.refresh_from_db()
        if order.is_terminal:
            raise OperatorError(f"already {order.state}")
        if order_kind.exchange_spec(order) is None:
            transfer = engine.live_transfer(order_kind, order.pk)
            if transfer is None:
                raise OperatorError("the payout has no transfer: cannot complete")
            try:
                view = sending.transfer_check(sending.wallet(), transfer, rebroadcast=False)
            except ProviderError as exc:
                raise OperatorError(f"the chain could not be read: {exc}") from exc
            if view.state != Transfer.State.MINED or not view.final:
                raise OperatorError(
                    f"the transfer is {view.state}"
                    + ("" if view.final else " and not final")
                    + ": cannot complete"
                )
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
                    f"ChangeNOW says {exchange.status!r} (amountTo {exchange.amount_to}): only "
                    "a finished exchange can be completed"
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


def order_replace_transfer(
    *, kind: str, order_id: object, actor: Actor, reason: str, cancel: bool = False
) -> ActionResult:
    """Speed up (same payment, higher fees) or cancel (zero-value to the host wallet) the
    order's pending transfer at its nonce."""
    reason = _require_reason(reason)
    order_kind, order = _load(kind, order_id)
    with _holding(kind, order.pk):
        plan = _plan_replace(order_kind, order, cancel=cancel)
        if not plan.allowed:
            raise OperatorError(plan.refusal)
        pending = _pending_transfer(order_kind, order.pk)
        assert pending is not None  # the plan allowed it
        try:
            replacement = sending.transfer_replace(
                transfer_id=pending.pk, cancel=cancel, actor=actor, reason=reason
            )
        except sending.SendError as exc:
            raise OperatorError(str(exc)) from exc
        except ProviderError as exc:
            raise OperatorError(f"the wallet refused the replacement: {exc}") from exc
    return ActionResult(
        str(order.pk),
        True,
        f"{replacement.kind}: {replacement.old_hash[:12]}… → {replacement.new_hash[:12]}… at "
        f"nonce {replacement.nonce}",
        data=replacement.as_json(),
    )


def order_provider_action(
    *, kind: str, order_id: object, actor: Actor, reason: str, which: str
) -> ActionResult:
    """Ask ChangeNOW for a refund (to the host wallet) or to continue the exchange."""
    reason = _require_reason(reason)
    if which not in ("refund", "continue"):
        raise OperatorError(f"unknown ChangeNOW action {which!r}")
    order_kind, order = _load(kind, order_id)
    with _holding(kind, order.pk):
        plan = _plan_provider_action(order_kind, order, which=which)
        if not plan.allowed:
            raise OperatorError(plan.refusal)
        client = engine.changenow()
        try:
            if which == "refund":
                client.request_refund(order.exchange_id, address=sending.host_address())
            else:
                client.request_continue(order.exchange_id)
        except ProviderError as exc:
            raise OperatorError(f"ChangeNOW refused: {exc}") from exc
        audit_record(
            object_type=_object_type(order_kind),
            object_id=order.pk,
            kind=f"{which}_requested",
            actor=actor,
            reason=reason,
            data={"exchange_id": order.exchange_id},
        )
    return ActionResult(str(order.pk), True, f"asked ChangeNOW to {which} {order.exchange_id}")
