"""Dual control (DESIGN.md 12.5): requests for actions on money, decided by a second person.

- `approval_request` records what is asked, by whom and why, with the plan the operator
  module gives for it now; a plan that is refused now cannot be asked for.
- `approval_approve` is the second person's decision: never the requester's own, only with
  the approver role, only while the request is pending and younger than 24 h. It runs the
  action through the operator module (its per-order lock, its proofs: the order may have
  moved on since it was asked, and then the request ends `failed` with the reason).
- `approval_reject` ends a request with a reason; `approvals_expire` ends stale ones.
- A payout above `dual_control_over_usdt` gets a `release_payout` request from the system;
  the engine leaves it in `reserved` until that request is executed (`payout_release_held`).
Every step writes an audit event on the request and the order.
"""

from __future__ import annotations

import contextlib
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from payouts import engine, operator
from payouts.models import ApprovalRequest, Payout
from payouts.services import runtime_settings_get
from payouts.transitions import Actor, audit_record

ORDER_ACTIONS = {
    "force_close": "force_close",
    "force_complete": "force_complete",
    "speed_up": "speed_up",
    "cancel_transfer": "cancel",
}
REQUEST_PERMISSION = "payouts.request_changes"
APPROVE_PERMISSION = "payouts.approve_changes"
# Run-time settings a second person must agree to: what decides how money is split and
# when it moves, the dual-control limit itself, and resuming a paused sweep. Pausing is the
# safe direction and stays immediate: an incident must not wait for a second person.
DUAL_SETTINGS = frozenset(
    {"conversion_threshold_usd", "platform_fee_percent", "dual_control_over_usdt"}
)
PAUSE_SETTINGS = frozenset({"conversions_paused", "payouts_paused"})


def settings_dual_controlled(changes: dict[str, Any]) -> dict[str, Any]:
    """The part of `changes` that needs a second person (resumes included)."""
    return {
        name: value
        for name, value in changes.items()
        if name in DUAL_SETTINGS or (name in PAUSE_SETTINGS and not value)
    }


def settings_change_request(*, changes: dict[str, Any], reason: str, user: Any) -> ApprovalRequest:
    """Ask for a change of run-time settings (approver role: they decide settings)."""
    from payouts.models import RuntimeSettings

    if not user.has_perm("payouts.change_runtimesettings"):
        raise NotAllowed("only an approver may ask to change run-time settings")
    reason = (reason or "").strip()
    if not reason:
        raise ApprovalError("a reason is required: it is recorded with the request")
    row = runtime_settings_get()
    lines = []
    clean: dict[str, str] = {}
    for name, value in changes.items():
        field = RuntimeSettings._meta.get_field(name)
        try:
            new = field.clean(value, row)
        except Exception as exc:  # noqa: BLE001 - a validation error: say which field
            raise ApprovalError(f"{name}: {exc}") from None
        clean[name] = str(new)
        lines.append(f"{field.verbose_name}: {getattr(row, name)} → {new}")
    if not clean:
        raise ApprovalError("nothing to change")
    return _open_request(
        actor=Actor.of_user(user),
        user=user,
        busy="a change of run-time settings is already waiting for a decision: decide it first",
        action=ApprovalRequest.Action.SETTINGS_CHANGE,
        target_kind="settings",
        target_id="1",
        options={"changes": clean},
        plan="Sets " + "; ".join(lines) + " (effective at the next job run).",
        reason=reason,
    )


class ApprovalError(Exception):
    """The request cannot be made or decided; the message says why."""


class NotAllowed(ApprovalError):
    """The person may not take this step (their own request, no approver role)."""


def _audit(req: ApprovalRequest, kind: str, actor: Actor, reason: str, **data: Any) -> None:
    audit_record(
        object_type="approvalrequest",
        object_id=req.pk,
        kind=kind,
        actor=actor,
        reason=reason,
        data={"action": req.action, "target": f"{req.target_kind}:{req.target_id}", **data},
    )
    audit_record(
        object_type={"batch": "conversionbatch", "settings": "runtimesettings"}.get(
            req.target_kind, req.target_kind
        ),
        object_id=req.target_id,
        kind=kind,
        actor=actor,
        reason=reason,
        data={"request": req.pk, "action": req.action, **data},
    )


def _open_request(*, actor: Actor, user: Any, busy: str, **fields: Any) -> ApprovalRequest:
    """Record a pending request (24 h to live) and its audit event; `busy` is the refusal
    when one for the same action and target is already waiting."""
    try:
        with transaction.atomic():
            req = ApprovalRequest.objects.create(
                **fields,
                requested_by=user,
                requested_actor=actor.name,
                expires_at=timezone.now() + timedelta(hours=ApprovalRequest.LIFETIME_HOURS),
            )
            _audit(req, "approval_requested", actor, req.reason, plan=req.plan, options=req.options)
    except IntegrityError:
        raise ApprovalError(busy) from None
    return req


def approval_request(
    *,
    action: str,
    kind: str,
    order_id: object,
    reason: str,
    user: Any,
    options: dict[str, Any] | None = None,
) -> ApprovalRequest:
    """Ask for `action` on an order. Refused when the action would be refused now."""
    if action not in ORDER_ACTIONS:
        raise ApprovalError(f"{action!r} is not an action that needs approval")
    if not user.has_perm(REQUEST_PERMISSION):
        raise NotAllowed("you may not ask for actions on money")
    reason = (reason or "").strip()
    if not reason:
        raise ApprovalError("a reason is required: it is recorded with the request")
    options = dict(options or {})
    plan = operator.order_plan(
        kind=kind,
        order_id=order_id,
        action=ORDER_ACTIONS[action],
        write_off=bool(options.get("write_off")),
        refund_tx=str(options.get("refund_tx") or ""),
    )
    if not plan.allowed:
        raise ApprovalError(f"refused now: {plan.refusal}")
    return _open_request(
        actor=Actor.of_user(user),
        user=user,
        busy=f"a request to {action.replace('_', ' ')} this {kind} is already waiting for a "
        "decision",
        action=action,
        target_kind=kind,
        target_id=str(order_id),
        options=options,
        plan=plan.effect,
        reason=reason,
    )


def _decidable(request_id: int, user: Any) -> ApprovalRequest:
    """The pending request, locked, that `user` may decide (or an error saying why not)."""
    if not user.has_perm(APPROVE_PERMISSION):
        raise NotAllowed("only an approver decides requests")
    try:
        req = ApprovalRequest.objects.select_for_update().get(pk=request_id)
    except ApprovalRequest.DoesNotExist:
        raise ApprovalError(f"no request {request_id}") from None
    if req.requested_by_id is not None and req.requested_by_id == user.pk:
        raise NotAllowed("you asked for this: another approver must decide it")
    if req.state == ApprovalRequest.State.EXPIRED:
        raise ApprovalError("the request expired (24 h): ask again if it is still needed")
    if req.state != ApprovalRequest.State.PENDING:
        raise ApprovalError(f"the request is already {req.state}")
    return req


def approval_reject(*, request_id: int, user: Any, reason: str) -> ApprovalRequest:
    reason = (reason or "").strip()
    if not reason:
        raise ApprovalError("a reason is required to reject a request")
    _expire_if_stale(request_id)
    with transaction.atomic():
        req = _decidable(request_id, user)
        ApprovalRequest.objects.filter(pk=req.pk).update(
            state=ApprovalRequest.State.REJECTED,
            decided_by=user,
            decided_at=timezone.now(),
            decision_reason=reason,
        )
        _audit(req, "approval_rejected", Actor.of_user(user), reason)
    req.refresh_from_db()
    return req


def approval_approve(*, request_id: int, user: Any, reason: str) -> ApprovalRequest:
    """Approve and execute. Expired, decided and own requests are refused; an action that
    is refused at execution ends the request `failed` with the refusal."""
    reason = (reason or "").strip()
    if not reason:
        raise ApprovalError("a reason is required to approve a request")
    actor = Actor.of_user(user)
    _expire_if_stale(request_id)
    with transaction.atomic():
        req = _decidable(request_id, user)
        # Decided first, in its own commit: a crash while executing can never leave the
        # request pending for a second approval to run it again.
        ApprovalRequest.objects.filter(pk=req.pk).update(
            state=ApprovalRequest.State.FAILED,
            decided_by=user,
            decided_at=timezone.now(),
            decision_reason=reason,
            result="approved; execution did not finish",
        )
        _audit(req, "approval_approved", actor, reason, requested_by=req.requested_actor)
    state, result = _execute(req, actor, reason)
    ApprovalRequest.objects.filter(pk=req.pk).update(state=state, result=result[:2000])
    _audit(req, f"approval_{state}", actor, reason, result=result[:500])
    req.refresh_from_db()
    return req


def _execute(req: ApprovalRequest, actor: Actor, reason: str) -> tuple[str, str]:
    why = f"{reason} (asked by {req.requested_actor}: {req.reason})"
    if req.action == ApprovalRequest.Action.CLIENT_DESTINATION:
        return _execute_destination(req, actor, why)
    if req.action == ApprovalRequest.Action.SETTINGS_CHANGE:
        from payouts.models import RuntimeSettings
        from payouts.services import runtime_settings_update

        changes = {
            name: RuntimeSettings._meta.get_field(name).to_python(value)
            for name, value in req.options["changes"].items()
        }
        try:
            runtime_settings_update(changes=changes, actor=actor, reason=why)
        except Exception as exc:  # noqa: BLE001 - validation at execution: the request fails
            return ApprovalRequest.State.FAILED, f"refused at execution: {exc}"
        return ApprovalRequest.State.EXECUTED, req.plan
    if req.action == ApprovalRequest.Action.RELEASE_PAYOUT:
        transaction.on_commit(lambda: engine.enqueue_advance(kind="payout", order_id=req.target_id))
        return ApprovalRequest.State.EXECUTED, "released: the engine takes its next step"
    try:
        if req.action == "force_close":
            result = operator.order_force_close(
                kind=req.target_kind,
                order_id=req.target_id,
                actor=actor,
                reason=why,
                write_off=bool(req.options.get("write_off")),
                refund_tx=str(req.options.get("refund_tx") or ""),
            )
        elif req.action == "force_complete":
            result = operator.order_force_complete(
                kind=req.target_kind, order_id=req.target_id, actor=actor, reason=why
            )
        else:
            result = operator.order_replace_transfer(
                kind=req.target_kind,
                order_id=req.target_id,
                actor=actor,
                reason=why,
                cancel=req.action == "cancel_transfer",
            )
    except operator.OperatorError as exc:
        return ApprovalRequest.State.FAILED, f"refused at execution: {exc}"
    state = ApprovalRequest.State.EXECUTED if result.done else ApprovalRequest.State.FAILED
    return state, result.detail


def _expire_if_stale(request_id: int) -> None:
    approvals_expire(only=ApprovalRequest.objects.filter(pk=request_id))


def approvals_expire(*, now: Any = None, only: Any = None) -> int:
    """End every pending request older than its 24 h (the watchdog runs it)."""
    now = now or timezone.now()
    stale = list(
        (only if only is not None else ApprovalRequest.objects).filter(
            state=ApprovalRequest.State.PENDING, expires_at__lte=now
        )
    )
    for req in stale:
        updated = ApprovalRequest.objects.filter(
            pk=req.pk, state=ApprovalRequest.State.PENDING
        ).update(state=ApprovalRequest.State.EXPIRED)
        if updated:
            _audit(req, "approval_expired", Actor.system("approvals"), "older than 24 h")
    return len(stale)


# --- client destinations ------------------------------------------------------------------


def client_destination_request(
    *, client: Any, changes: dict[str, str], reason: str, user: Any
) -> ApprovalRequest:
    """Ask to pay a client somewhere else (approver role). `changes` are validated
    destination fields (payout_currency, payout_network, payout_address, payout_extra_id)."""
    from payouts.services import DESTINATION_FIELDS

    if not user.has_perm("payouts.change_client"):
        raise NotAllowed("only an approver may ask to change a client's payout destination")
    reason = (reason or "").strip()
    if not reason:
        raise ApprovalError("a reason is required: it is recorded with the request")
    if not changes or set(changes) - set(DESTINATION_FIELDS):
        raise ApprovalError("only payout destination fields are asked for this way")
    old = " ".join(str(getattr(client, f) or "") for f in DESTINATION_FIELDS).strip()
    new = " ".join(str(changes.get(f, getattr(client, f)) or "") for f in DESTINATION_FIELDS)
    return _open_request(
        actor=Actor.of_user(user),
        user=user,
        busy=f"a destination change for {client.reference} is already waiting for a decision",
        action=ApprovalRequest.Action.CLIENT_DESTINATION,
        target_kind="client",
        target_id=str(client.pk),
        options={"changes": changes, "reference": client.reference},
        plan=f"Pays {client.reference} at {new.strip()} instead of {old}, from its next "
        "payout on (payouts already under way keep their address).",
        reason=reason,
    )


def _execute_destination(req: ApprovalRequest, actor: Actor, why: str) -> tuple[str, str]:
    from payouts.models import Client
    from payouts.services import client_upsert, client_validate

    client = Client.objects.get(pk=req.target_id)
    raw = {
        "reference": client.reference,
        "name": client.name,
        "payout_strategy": client.payout_strategy,
        "payout_threshold_usd": str(client.payout_threshold_usd),
        "payout_currency": client.payout_currency,
        "payout_network": client.payout_network,
        "payout_address": client.payout_address,
        "payout_extra_id": client.payout_extra_id,
        "fee_percent": "" if client.fee_percent is None else str(client.fee_percent),
        **req.options["changes"],
    }
    try:
        cleaned = client_validate(data=raw)  # the address checks again, at execution
    except ValueError as exc:
        return ApprovalRequest.State.FAILED, f"refused at execution: {exc}"
    fields = {"reference": client.reference, **{k: cleaned[k] for k in req.options["changes"]}}
    client_upsert(data=fields, actor=actor, reason=why)
    return ApprovalRequest.State.EXECUTED, req.plan


# --- large payouts ------------------------------------------------------------------------


def payout_release_held(*, payout: Payout) -> bool:
    """True while the payout must wait for a second person: above `dual_control_over_usdt`
    (0: off) and no executed `release_payout` request. The request is made here, once."""
    limit = runtime_settings_get().dual_control_over_usdt or Decimal(0)
    # A payout split under ChangeNOW's maximum counts with its siblings: splitting never
    # takes a sum below the limit's reach.
    amount = max(payout.usdt_amount, payout.split_total_usdt or Decimal(0))
    if not limit or amount <= limit:
        return False
    requests = ApprovalRequest.objects.filter(
        action=ApprovalRequest.Action.RELEASE_PAYOUT, target_kind="payout", target_id=str(payout.pk)
    )
    if requests.filter(state=ApprovalRequest.State.EXECUTED).exists():
        return False
    if not requests.filter(state=ApprovalRequest.State.PENDING).exists():
        with contextlib.suppress(ApprovalError):  # made by a concurrent step
            _open_request(
                actor=Actor.system("payout_sweep"),
                user=None,
                busy="already asked",
                action=ApprovalRequest.Action.RELEASE_PAYOUT,
                target_kind="payout",
                target_id=str(payout.pk),
                plan=(
                    f"Lets payout {str(payout.pk)[:8]} of {payout.usdt_amount} USDT to "
                    f"{payout.currency.upper()}/{payout.network} {payout.address} go ahead: "
                    "the engine then creates its exchange (or sends it) as usual."
                ),
                reason=f"{payout.usdt_amount} USDT is above the dual-control limit of {limit}"
                if amount == payout.usdt_amount
                else f"{payout.usdt_amount} USDT, part of {amount} USDT split under ChangeNOW's "
                f"maximum, is above the dual-control limit of {limit} in all",
            )
    return True
