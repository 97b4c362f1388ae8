"""Helpers every back-office page shares: the run-time settings of a request, search of
orders by id or payment, and the audit timeline of an object."""

from __future__ import annotations

import contextlib
import re
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.apps import apps
from django.contrib import admin
from django.db.models import Q
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse

from payouts.admin.support import (
    admin_url,
    change_link,
    fmt_decimal,
    short_id,
)
from payouts.models import (
    Accumulation,
    AuditEvent,
    ExchangeAttempt,
    Payout,
    RuntimeSettings,
    Transfer,
    TransferTx,
)
from payouts.services import (
    runtime_settings_get,
)

DATE_FILTER = admin.DateFieldListFilter
HEX = set("0123456789abcdefABCDEF")


def _runtime(request: HttpRequest) -> RuntimeSettings:
    """The settings row, read once per request (stuck limits are needed by every row)."""
    cached = getattr(request, "_bo_runtime", None)
    if cached is None:
        cached = runtime_settings_get()
        request._bo_runtime = cached  # type: ignore[attr-defined]
    return cached


def _as_uuid(term: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(term)
    except ValueError:
        return None


_HASH_PREFIX = re.compile(r"(0x)?[0-9a-fA-F]{8,64}")


def hash_prefix(term: str) -> str:
    """The lower-case 0x-prefixed start of a transaction hash if `term` can be one (at least
    8 hex digits, as pages show hashes), else ''."""
    if not _HASH_PREFIX.fullmatch(term):
        return ""
    return "0x" + term.lower().removeprefix("0x")


def transfers_by_hash_prefix(prefix: str) -> Any:
    """Transfers any of whose signed transactions (original, speed-up, cancel) starts with
    `prefix`: an index range scan (transfertx_hash_prefix)."""
    return TransferTx.objects.filter(tx_hash__startswith=prefix).values("transfer_id")[:100]


def orders_matching(term: str, *, by_payment: bool = True) -> tuple[set[Any], set[Any]]:
    """(batch ids, payout ids) an operator may mean by `term`: an order id, an exchange id
    (any attempt, not only the current one), a transaction hash or a NOWPayments payment id.
    Each lookup is an exact match on an indexed column."""
    batch_ids: set[Any] = set()
    payout_ids: set[Any] = set()
    as_uuid = _as_uuid(term)
    if as_uuid is not None:
        batch_ids.add(as_uuid)
        payout_ids.add(as_uuid)
    linked = [
        ExchangeAttempt.objects.filter(
            Q(exchange_id=term) | Q(payin_hash=term) | Q(payout_hash=term)
        ),
        Transfer.objects.filter(tx_hash__in={term, term.lower()}),
    ]
    prefix = hash_prefix(term)
    if prefix:
        linked.append(Transfer.objects.filter(pk__in=transfers_by_hash_prefix(prefix)))
    for queryset in linked:
        for batch_id, payout_id in queryset.values_list("batch_id", "payout_id")[:100]:
            (batch_ids if batch_id else payout_ids).add(batch_id or payout_id)
    if by_payment:
        payments = Accumulation.objects.filter(Q(payment_id=term) | Q(order_id=term))
        for batch_id, payout_id in payments.values_list("batch_id", "payout_id"):
            if batch_id:
                batch_ids.add(batch_id)
            if payout_id:
                payout_ids.add(payout_id)
    return batch_ids, payout_ids


def _history_entry(entry: Any) -> dict[str, str]:
    """One ChangeNOW status seen, with its time in the page's format."""
    if not isinstance(entry, dict):
        return {"status": str(entry), "at": ""}
    at = str(entry.get("at") or "")
    with contextlib.suppress(ValueError):
        at = datetime.fromisoformat(at).strftime("%Y-%m-%d %H:%M:%S")
    return {"status": str(entry.get("status") or "?"), "at": at}


def _tidy(value: Any) -> Any:
    """Audit data as people read it: '0.0484', not '0.048400000000000000'."""
    if isinstance(value, str):
        try:
            number = Decimal(value)
        except ArithmeticError:
            return value
        return fmt_decimal(number) if number.is_finite() and "." in value else value
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_tidy(v)}" for k, v in value.items())
    return value


def audit_details(events: list[AuditEvent]) -> list[AuditEvent]:
    for event in events:
        data = event.data if isinstance(event.data, dict) else {"data": event.data}
        event.details = [(key, _tidy(value)) for key, value in data.items()]
    return events


def audit_timeline(object_type: str, object_id: object, limit: int = 200) -> list[AuditEvent]:
    events = AuditEvent.objects.filter(object_type=object_type, object_id=str(object_id))
    return audit_details(list(events.order_by("id")[:limit]))


def audit_url(object_type: str, object_id: object) -> str:
    return f"{admin_url(AuditEvent)}?object_type={object_type}&object_id={object_id}"


def admin_url_by_name(app_label: str, model_name: str, view: str = "changelist") -> str:
    try:
        return reverse(f"admin:{app_label}_{model_name}_{view}")
    except NoReverseMatch:  # the app may not be installed
        return ""


def order_link(obj: Any) -> Any:
    if obj.batch_id:
        return change_link(
            apps.get_model("batches", "ConversionBatch"),
            obj.batch_id,
            f"batch {short_id(obj.batch_id)}",
        )
    return change_link(Payout, obj.payout_id, f"payout {short_id(obj.payout_id)}")
