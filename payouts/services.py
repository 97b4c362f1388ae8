"""Services of the payouts app: run-time settings, clients, intake (accumulations), payouts.

Functions are named `<entity>_<verb>` and take keyword-only arguments. Admin actions, DRF
views, tasks and commands only parse input and call these.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from integrations.assets import (
    AmountError,
    check_positive,
    to_base_units,
    to_decimal,
)
from payouts.models import Accumulation, Client, RuntimeSettings
from payouts.transitions import Actor, audit_record

# Sanity limits of one payment: far above anything real, so a value beyond them is a bug or
# an attack (a USD figure sent as ETH, a token quantity sent as ETH), never a payment.
MAX_PAYMENT_ETH = Decimal("10000")
MAX_PAYMENT_USD = Decimal("50000000")


class IntakeError(Exception):
    """A payment that cannot be credited; `code` says why, for the stored webhook event."""

    code = "invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownClientError(IntakeError):
    code = "unknown_client"


class InvalidAmountError(IntakeError):
    code = "invalid_amount"


class DuplicateConflictError(IntakeError):
    """The payment id was credited before with different facts: a human must look."""

    code = "duplicate_conflict"


# --- run-time settings ------------------------------------------------------------------

SETTINGS_EDITABLE = (
    "conversion_threshold_usd",
    "platform_fee_percent",
    "max_pending_age_minutes",
    "conversion_sweep_interval_seconds",
    "payout_sweep_interval_seconds",
    "advance_interval_seconds",
    "stuck_reserved_minutes",
    "stuck_exchange_created_minutes",
    "stuck_funds_sent_minutes",
    "stuck_converting_minutes",
    "conversions_paused",
    "payouts_paused",
    "confirmations",
    "stuck_broadcast_minutes",
    "max_fee_per_gas_gwei",
    "direct_payout_min_usdt",
    "dual_control_over_usdt",
)


def runtime_settings_get() -> RuntimeSettings:
    """The settings row, read fresh (never cached: a change applies at the next job run)."""
    row = RuntimeSettings.objects.filter(pk=1).first()
    if row is not None:
        return row
    try:
        with transaction.atomic():
            return RuntimeSettings.objects.create(
                pk=1,
                conversion_threshold_usd=settings.CONVERSION_THRESHOLD_USD,
                platform_fee_percent=settings.PLATFORM_FEE_PERCENT,
                confirmations=settings.WALLET_CONFIRMATIONS,
            )
    except IntegrityError:  # created by a concurrent first reader
        return RuntimeSettings.objects.get(pk=1)


def runtime_settings_update(
    *, changes: Mapping[str, Any], actor: Actor, reason: str
) -> RuntimeSettings:
    """Apply `changes` under a row lock; one audit event per changed value (old and new)."""
    unknown = set(changes) - set(SETTINGS_EDITABLE)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    if not reason.strip():
        raise ValueError("a reason is required to change run-time settings")
    runtime_settings_get()
    with transaction.atomic():
        row = RuntimeSettings.objects.select_for_update().get(pk=1)
        changed: dict[str, tuple[Any, Any]] = {}
        for name, new in changes.items():
            old = getattr(row, name)
            if old != new:
                setattr(row, name, new)
                changed[name] = (old, new)
        if changed:
            row.full_clean()
            row.save()
            for name, (old, new) in changed.items():
                audit_record(
                    object_type="runtimesettings",
                    object_id=1,
                    kind="setting_changed",
                    actor=actor,
                    reason=reason,
                    data={"setting": name, "old": str(old), "new": str(new)},
                )
        return row


# --- clients ----------------------------------------------------------------------------

CLIENT_CSV_REQUIRED = (
    "reference",
    "name",
    "payout_strategy",
    "payout_threshold_usd",
    "payout_currency",
    "payout_network",
    "payout_address",
)
CLIENT_CSV_OPTIONAL = ("payout_extra_id", "fee_percent")
DESTINATION_FIELDS = ("payout_currency", "payout_network", "payout_address", "payout_extra_id")


@dataclass
class ClientImportResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class ClientInvalid(ValueError):
    """Every problem of one client's fields, by field, in words a person can act on."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{name}: {text}" for name, text in self.errors.items()))


CLIENT_LABELS = {
    "reference": "Reference",
    "name": "Name",
    "payout_strategy": "Payout strategy",
    "payout_threshold_usd": "Threshold",
    "payout_currency": "Payout currency",
    "payout_network": "Payout network",
    "payout_address": "Payout address",
}


def _amount_or_none(text: str) -> Decimal | None:
    try:
        return to_decimal(text, field="amount")
    except AmountError:
        return None


def client_validate(*, data: Mapping[str, str]) -> dict[str, Any]:
    """Validate one client's fields (its payout address too) and return the cleaned values,
    or raise ClientInvalid with every problem found, by field. Currency and network are
    normalised ("USDT"/"ERC20" -> "usdt"/"eth") and must be an active pair of ChangeNOW's
    list."""
    from integrations.addresses import validate_address
    from payouts.currencies import (
        CurrencyError,
        currency_catalogue_ensure,
        currency_normalise,
        currency_pair_check,
    )

    errors: dict[str, str] = {}
    cleaned: dict[str, Any] = {}
    for name in CLIENT_CSV_REQUIRED:
        value = (data.get(name) or "").strip()
        if not value:
            errors[name] = f"{CLIENT_LABELS[name]} is required"
        cleaned[name] = value
    reference = cleaned["reference"]
    if reference and (":" in reference or len(reference) > 64):
        errors["reference"] = "Reference must be at most 64 characters and contain no ':'"
    strategy = cleaned["payout_strategy"].lower()
    cleaned["payout_strategy"] = strategy
    if strategy and strategy not in Client.Strategy.values:
        errors["payout_strategy"] = (
            f"Payout strategy must be one of {', '.join(Client.Strategy.values)}, not {strategy!r}"
        )
    raw_threshold = cleaned["payout_threshold_usd"]
    threshold = _amount_or_none(raw_threshold) if raw_threshold else None
    if raw_threshold and threshold is None:
        errors["payout_threshold_usd"] = f"Threshold must be a number of USD, not {raw_threshold!r}"
    elif threshold is not None:
        if strategy == "instant" and threshold != 0:
            errors["payout_threshold_usd"] = "Instant clients have a threshold of 0"
        elif strategy == "threshold" and threshold <= 0:
            errors["payout_threshold_usd"] = "Threshold must be more than 0"
        elif threshold > MAX_PAYMENT_USD:
            errors["payout_threshold_usd"] = f"Threshold must be at most {MAX_PAYMENT_USD} USD"
    cleaned["payout_threshold_usd"] = threshold
    currency, network = currency_normalise(
        currency=cleaned["payout_currency"], network=cleaned["payout_network"]
    )
    cleaned["payout_currency"], cleaned["payout_network"] = currency, network
    extra_id = (data.get("payout_extra_id") or "").strip()
    cleaned["payout_extra_id"] = extra_id
    fee = (data.get("fee_percent") or "").strip()
    cleaned["fee_percent"] = None
    if fee:
        fee_value = _amount_or_none(fee)
        if (
            fee_value is None
            or not Decimal(0) <= fee_value <= Decimal(100)
            or fee_value.as_tuple().exponent < -4  # type: ignore[operator]
        ):
            errors["fee_percent"] = "Fee must be between 0 and 100 %, with at most 4 decimals"
        else:
            cleaned["fee_percent"] = fee_value
    if currency and network:
        try:
            currency_catalogue_ensure(actor=Actor.system("currency catalogue"))
            currency_pair_check(currency=currency, network=network, extra_id=extra_id)
        except CurrencyError as exc:
            field_name = "payout_extra_id" if "extra id" in str(exc) else "payout_currency"
            errors[field_name] = str(exc)[:1].upper() + str(exc)[1:]
    if network and cleaned["payout_address"] and "payout_address" not in errors:
        try:
            validate_address(network, cleaned["payout_address"], extra_id or None)
        except ValueError as exc:
            errors["payout_address"] = f"Payout address: {exc}"
    if errors:
        raise ClientInvalid(errors)
    return cleaned


def client_upsert(*, data: Mapping[str, Any], actor: Actor, reason: str = "") -> tuple[Client, str]:
    """Create or update one client by reference from cleaned data; audit creation and every
    change of the payout destination. Returns the client and 'created'/'updated'/'unchanged'."""
    with transaction.atomic():
        client = Client.objects.select_for_update().filter(reference=data["reference"]).first()
        if client is None:
            client = Client.objects.create(**data)
            audit_record(
                object_type="client",
                object_id=client.pk,
                kind="client_created",
                actor=actor,
                reason=reason,
                data={k: str(v) for k, v in data.items()},
            )
            return client, "created"
        before = {name: getattr(client, name) for name in data}
        changes = {k: (before[k], v) for k, v in data.items() if before[k] != v}
        if not changes:
            return client, "unchanged"
        for name, (_old, new) in changes.items():
            setattr(client, name, new)
        client.save()
        kind = (
            "payout_destination_changed"
            if any(name in DESTINATION_FIELDS for name in changes)
            else "client_updated"
        )
        audit_record(
            object_type="client",
            object_id=client.pk,
            kind=kind,
            actor=actor,
            reason=reason,
            data={k: {"old": str(o), "new": str(n)} for k, (o, n) in changes.items()},
        )
        return client, "updated"


def client_import_csv(*, lines: Iterable[str], actor: Actor) -> ClientImportResult:
    """Validate every line first; write nothing unless all lines are valid."""
    result = ClientImportResult()
    reader = csv.DictReader(lines)
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in CLIENT_CSV_REQUIRED if c not in header]
    unknown = [c for c in header if c not in CLIENT_CSV_REQUIRED + CLIENT_CSV_OPTIONAL]
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"missing columns: {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown columns: {', '.join(unknown)}")
        result.errors.append((1, "; ".join(problems)))
        return result
    reader.fieldnames = header
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if None in row:
            result.errors.append((line, "too many fields"))
            continue
        try:
            cleaned = client_validate(data=row)
        except ValueError as exc:
            result.errors.append((line, str(exc)))
            continue
        if cleaned["reference"] in seen:
            result.errors.append(
                (
                    line,
                    f"reference {cleaned['reference']} repeats line {seen[cleaned['reference']]}",
                )
            )
            continue
        seen[cleaned["reference"]] = line
        rows.append(cleaned)
    if result.errors:
        return result
    with transaction.atomic():
        for cleaned in rows:
            _client, outcome = client_upsert(data=cleaned, actor=actor, reason="import_clients")
            setattr(result, outcome, getattr(result, outcome) + 1)
    return result


def client_fee_percent(*, client: Client, runtime: RuntimeSettings) -> Decimal:
    return client.fee_percent if client.fee_percent is not None else runtime.platform_fee_percent


# --- intake -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordResult:
    accumulation: Accumulation
    created: bool


# A plain decimal in ASCII: no sign but minus, no exponent, no "_", no spaces, no digits of
# other scripts (Decimal() alone takes "1_000", Arabic-Indic digits and a no-break space).
_PLAIN_DECIMAL = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
_AMOUNT_PLACES = 18  # the column's decimal places


def _decimal_places(amount: Decimal) -> int:
    """Significant decimals, read off the digits: no arithmetic, so nothing rounds or
    underflows (1e-999999999 is positive, below any limit, and scales to zero)."""
    _sign, digits, exponent = amount.as_tuple()
    zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(int(exponent) + zeros))


def _payment_amount(value: object, *, field: str, maximum: Decimal) -> Decimal:
    """A JSON number (int or Decimal) or a plain ASCII decimal string, positive, within the
    sanity limit, with no more decimals than the column holds."""
    if isinstance(value, str) and not _PLAIN_DECIMAL.fullmatch(value):
        raise InvalidAmountError(f"{field}: {ascii(value)[:40]} is not a plain decimal number")
    try:
        amount = check_positive(to_decimal(value, field=field), field=field, maximum=maximum)
        if _decimal_places(amount) > _AMOUNT_PLACES:
            # The database would round it silently.
            raise AmountError(f"{field}: {amount} has more than {_AMOUNT_PLACES} decimals")
        to_base_units(amount, "eth")
    except AmountError as exc:
        raise InvalidAmountError(str(exc)) from None
    return amount


def _payment_id(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise IntakeError(f"payment_id must be text or an integer, not {type(value).__name__}")
    text = str(value)
    if not 1 <= len(text) <= 64 or not text.isascii() or not text.isprintable() or " " in text:
        raise IntakeError("payment_id must be 1 to 64 printable ASCII characters, no spaces")
    return text


def _storable(text: str) -> bool:
    # PostgreSQL text holds neither NUL nor a lone surrogate.
    return "\x00" not in text and text.encode("utf-8", "surrogatepass") == text.encode(
        "utf-8", "backslashreplace"
    )


# The credit in one statement (one round trip): the client and the fee in force (its
# override, else the run-time setting, else the setting's initial value, which is what
# `runtime_settings_get` would create), the row, and its audit event. ON CONFLICT instead of
# a savepoint: a repeat inserts nothing and is looked at afterwards.
_CREDIT_SQL = """
WITH client AS (
    SELECT c.id, coalesce(
        c.fee_percent,
        (SELECT platform_fee_percent FROM payouts_runtimesettings WHERE id = 1),
        %(default_fee)s
    ) AS fee
    FROM payouts_client c WHERE c.reference = %(reference)s
), acc AS (
    INSERT INTO payouts_accumulation (
        client_id, payment_id, order_id, eth, usd, fee_percent, state, created_at,
        state_changed_at
    )
    SELECT id, %(payment_id)s, %(order_id)s, %(eth)s, %(usd)s, fee, 'pending', %(now)s, %(now)s
    FROM client
    ON CONFLICT (payment_id) DO NOTHING
    RETURNING id, client_id, fee_percent
), audit AS (
    INSERT INTO payouts_auditevent (
        object_type, object_id, kind, from_state, to_state, actor, user_id, reason, data,
        created_at
    )
    SELECT 'accumulation', acc.id::text, 'credited', '', 'pending', %(actor)s, %(user_id)s::bigint,
           '', %(data)s::jsonb, %(now)s
    FROM acc
)
SELECT acc.id, acc.client_id, acc.fee_percent FROM acc
"""


def accumulation_record(
    *,
    client_reference: str,
    payment_id: str | int,
    eth: object,
    usd: object,
    actor: Actor,
    order_id: str = "",
) -> RecordResult:
    """Credit one finished payment. Idempotent on `payment_id`: a repeat returns the existing
    row and changes nothing; a repeat with different facts raises DuplicateConflictError.
    Amounts are JSON numbers or plain ASCII decimal strings (DESIGN 12.6)."""
    payment_id = _payment_id(payment_id)
    eth_amount = _payment_amount(eth, field="eth", maximum=MAX_PAYMENT_ETH)
    usd_amount = _payment_amount(usd, field="usd", maximum=MAX_PAYMENT_USD)
    if not _storable(client_reference) or not _storable(order_id):
        raise IntakeError("client reference or order_id holds a NUL or a lone surrogate")

    now = timezone.now()
    user_id = actor.user.pk if actor.user is not None and actor.user.pk else None
    data = {"payment_id": payment_id, "eth": eth_amount, "usd": usd_amount}
    with connection.cursor() as cur:
        cur.execute(
            _CREDIT_SQL,
            {
                "default_fee": settings.PLATFORM_FEE_PERCENT,
                "reference": client_reference,
                "payment_id": payment_id,
                "order_id": order_id[:200],
                "eth": eth_amount,
                "usd": usd_amount,
                "now": now,
                "actor": actor.name,
                "user_id": user_id,
                "data": json.dumps(data, cls=DjangoJSONEncoder),
            },
        )
        row = cur.fetchone()
    if row is None:
        # Nothing inserted: the payment is credited already (here or by a concurrent
        # delivery, whose commit the insert waited for), or the client is unknown.
        existing = (
            Accumulation.objects.filter(payment_id=payment_id).select_related("client").first()
        )
        if existing is None:
            raise UnknownClientError(f"no client with reference {client_reference!r}")
        return _existing_result(existing, client_reference, eth_amount, usd_amount)
    acc_id, client_id, fee_percent = row
    acc = Accumulation(
        pk=acc_id,
        client_id=client_id,
        payment_id=payment_id,
        order_id=order_id[:200],
        eth=eth_amount,
        usd=usd_amount,
        fee_percent=fee_percent,
        state=Accumulation.State.PENDING,
        created_at=now,
        state_changed_at=now,
    )
    acc._state.adding = False
    acc._state.db = connection.alias
    return RecordResult(accumulation=acc, created=True)


def _existing_result(
    existing: Accumulation, client_reference: str, eth: Decimal, usd: Decimal
) -> RecordResult:
    if (existing.client.reference, existing.eth, existing.usd) != (client_reference, eth, usd):
        raise DuplicateConflictError(
            f"payment {existing.payment_id} was credited as {existing.eth} ETH / {existing.usd} "
            f"USD to {existing.client.reference}; this delivery says {eth} ETH / {usd} USD to "
            f"{client_reference}"
        )
    return RecordResult(accumulation=existing, created=False)


# --- payouts ----------------------------------------------------------------------------

PAYOUT_FROM = ("usdt", "eth")  # payouts are funded in USDT (ERC-20) from the host wallet


def payout_is_direct(*, currency: str, network: str) -> bool:
    """A client paid in USDT on Ethereum gets a plain ERC-20 transfer, no exchange."""
    return (currency.lower(), network.lower()) == PAYOUT_FROM


_PAYOUT_PAID_SQL = """
WITH moved AS (
    UPDATE payouts_accumulation SET state = 'paid', state_changed_at = now()
    WHERE payout_id = %(payout_id)s AND state = 'paying'
    RETURNING usdt
)
SELECT count(*), coalesce(sum(usdt), 0) FROM moved
"""


def payout_complete(*, payout_id: Any, amount_to: Decimal | None, actor: Actor) -> bool:
    """Mark the payout's rows paid and the payout completed in one transaction; a second
    call on a completed payout is a no-op (returns False)."""
    from django.db import connection

    from payouts.models import Payout
    from payouts.postings import payout_post_completed
    from payouts.transitions import check_move, transition

    check_move(Accumulation, "paying", "paid")
    with transaction.atomic():
        payout = Payout.objects.select_for_update().get(pk=payout_id)
        if payout.state == Payout.State.COMPLETED:
            return False
        check_move(Payout, payout.state, Payout.State.COMPLETED)
        with connection.cursor() as cur:
            cur.execute(_PAYOUT_PAID_SQL, {"payout_id": payout.pk})
            rows, usdt = cur.fetchone()
        if (rows, Decimal(usdt)) != (payout.row_count, payout.usdt_amount):
            raise RuntimeError(
                f"payout {payout.pk}: {rows} rows / {usdt} USDT paying, expected "
                f"{payout.row_count} / {payout.usdt_amount}"
            )
        transition(
            model=Payout,
            pk=payout.pk,
            to_state="completed",
            actor=actor,
            reason="payout delivered",
            updates={"amount_to": amount_to},
            data={
                "rows": rows,
                "usdt": payout.usdt_amount,
                "amount_to": amount_to,
                "accumulations": "paying -> paid",
            },
        )
        payout_post_completed(payout=payout, actor=actor)
    return True
