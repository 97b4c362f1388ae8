"""The one way states change: lock the row, check the table, write the state, audit it.

Each model carries its own `TRANSITIONS` table. `transition()` is the single locked function
used for one object; `check_move()` is what set-based moves of many rows (the sweep, the
distribution) call before their one statement, so both paths obey the same table.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from django.contrib.auth.models import AbstractBaseUser
from django.db import models, transaction
from django.utils import timezone

from payouts.models import AuditEvent

log = logging.getLogger("payouts.transitions")


class TransitionError(Exception):
    """A move the table does not allow, or an object not in the state the caller expected."""


@dataclass(frozen=True)
class Actor:
    """Who did it: a person (through admin) or a system job."""

    name: str
    user: AbstractBaseUser | None = None

    @classmethod
    def system(cls, job: str) -> Actor:
        return cls(name=f"system:{job}")

    @classmethod
    def of_user(cls, user: AbstractBaseUser) -> Actor:
        return cls(name=f"user:{user.get_username()}", user=user)


def object_type_of(model: type[models.Model]) -> str:
    return model._meta.model_name or model.__name__.lower()


def audit_record(
    *,
    object_type: str,
    object_id: object,
    kind: str,
    actor: Actor,
    reason: str = "",
    from_state: str = "",
    to_state: str = "",
    data: Mapping[str, Any] | None = None,
) -> AuditEvent:
    return AuditEvent.objects.create(
        object_type=object_type,
        object_id=str(object_id),
        kind=kind,
        actor=actor.name,
        user=actor.user if actor.user is not None and actor.user.pk else None,
        reason=reason,
        from_state=from_state,
        to_state=to_state,
        data=dict(data or {}),
    )


def check_move(model: type[models.Model], from_state: str, to_state: str) -> None:
    table: Mapping[str, frozenset[str]] = model.TRANSITIONS  # type: ignore[attr-defined]
    if from_state not in table:
        raise TransitionError(f"{model.__name__}: unknown state {from_state!r}")
    if to_state not in table[from_state]:
        raise TransitionError(f"{model.__name__}: {from_state} -> {to_state} is not allowed")


M = TypeVar("M", bound=models.Model)


def transition(
    *,
    model: type[M],
    pk: object,
    to_state: str,
    actor: Actor,
    reason: str = "",
    data: Mapping[str, Any] | None = None,
    updates: Mapping[str, Any] | None = None,
    expect_from: frozenset[str] | set[str] | None = None,
) -> M:
    """Move one object to `to_state` under a row lock; raise TransitionError and change
    nothing when the move is not allowed or the object is not in an expected state."""
    with transaction.atomic():
        obj = model.objects.select_for_update().get(pk=pk)  # type: ignore[attr-defined]
        from_state: str = obj.state
        if expect_from is not None and from_state not in expect_from:
            raise TransitionError(
                f"{model.__name__} {pk}: is {from_state}, expected one of {sorted(expect_from)}"
            )
        check_move(model, from_state, to_state)
        now = timezone.now()
        for field, value in (updates or {}).items():
            setattr(obj, field, value)
        obj.state = to_state
        obj.state_changed_at = now
        if to_state == "completed" and hasattr(obj, "completed_at"):
            obj.completed_at = now
        obj.save()
        log.info(
            "state change",
            extra={
                "object_type": object_type_of(model),
                "order_id": str(obj.pk),
                "from": from_state,
                "to": to_state,
                "actor": actor.name,
            },
        )
        audit_record(
            object_type=object_type_of(model),
            object_id=obj.pk,
            kind="transition",
            actor=actor,
            reason=reason,
            from_state=from_state,
            to_state=to_state,
            data=data,
        )
        return obj
