"""Domain models of the money core: clients, accumulations, payouts, audit, run-time settings.

Design:
- Every amount is one field type (`AmountField`: numeric(38, 18)); the asset is named by the
  column (`eth`, `usd`, `usdt`), never implied, so a sum can never pick the wrong meaning.
- Rules that protect money are database constraints, not just Python checks: positive
  amounts, the states an object may be in, and which links each state requires.
- States change only through `payouts.transitions` (one locked function per object, one
  table of allowed moves, an audit event for each move). Set-based moves of many rows
  (the sweep, the distribution) check the same table and write one audit event per order.
- A conversion batch and a payout are two kinds of one *funded exchange order*
  (`FundedOrder`): the engine that drives them lives here and batches reuse it.
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import ClassVar

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower, Now

from integrations.assets import format_amount


class AmountField(models.DecimalField):
    """The one amount type: numeric(38, 18) holds every asset's decimals exactly."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("max_digits", 38)
        kwargs.setdefault("decimal_places", 18)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> tuple:
        name, _path, args, kwargs = super().deconstruct()
        return name, "payouts.models.AmountField", args, kwargs


def PercentField(**kwargs: object) -> models.DecimalField:  # noqa: N802 - reads as a field
    return models.DecimalField(
        max_digits=7,
        decimal_places=4,
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(100))],
        **kwargs,
    )


def _states_check(name: str, states: list[str]) -> models.CheckConstraint:
    return models.CheckConstraint(condition=Q(state__in=states), name=name)


class Client(models.Model):
    """A merchant. `reference` is the merchant id that prefixes NOWPayments `order_id`s."""

    class Strategy(models.TextChoices):
        INSTANT = "instant", "Instant (threshold 0)"
        THRESHOLD = "threshold", "Threshold"

    reference = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    payout_strategy = models.CharField(max_length=16, choices=Strategy.choices)
    payout_threshold_usd = AmountField(default=Decimal(0))
    payout_currency = models.CharField(max_length=16)
    payout_network = models.CharField(max_length=16)
    payout_address = models.CharField(max_length=128)
    payout_extra_id = models.CharField(max_length=128, blank=True, default="")
    fee_percent = PercentField(
        null=True, blank=True, help_text="Override of the platform fee; empty = platform fee."
    )
    active = models.BooleanField(default=True)
    # Why the client's converted USDT is not being paid right now, as the last payout sweep
    # saw it (empty: nothing waits, or it was just paid). Written by the sweep only.
    unpaid_code = models.CharField(max_length=32, blank=True, default="", db_default="")
    unpaid_reason = models.CharField(max_length=300, blank=True, default="", db_default="")
    unpaid_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["reference"]
        constraints: ClassVar = [
            models.CheckConstraint(
                condition=(Q(payout_strategy="instant", payout_threshold_usd=0))
                | Q(payout_strategy="threshold", payout_threshold_usd__gt=0),
                name="client_strategy_threshold",
            ),
            models.CheckConstraint(
                condition=Q(fee_percent__isnull=True) | Q(fee_percent__gte=0, fee_percent__lte=100),
                name="client_fee_percent_range",
            ),
            models.CheckConstraint(
                condition=~Q(reference="") & ~Q(reference__contains=":"),
                name="client_reference_format",
            ),
            models.CheckConstraint(
                condition=~Q(payout_address="") & ~Q(payout_currency="") & ~Q(payout_network=""),
                name="client_destination_present",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.reference} ({self.name})"


class Currency(models.Model):
    """One (ticker, network) of ChangeNOW's currency list, as its last refresh saw it.

    The refresh upserts every listed currency and marks the ones no longer listed as active
    inactive (they are never deleted: clients keep pointing at them). Client destinations
    must name an active, non-fiat pair of this table.
    """

    ticker = models.CharField(max_length=16)
    network = models.CharField(max_length=16)
    name = models.CharField(max_length=100)
    legacy_ticker = models.CharField(max_length=32, blank=True, default="")
    has_external_id = models.BooleanField(default=False)
    is_fiat = models.BooleanField(default=False)
    active = models.BooleanField(default=True)
    first_seen_at = models.DateTimeField()
    refreshed_at = models.DateTimeField()

    class Meta:
        ordering = ["ticker", "network"]
        verbose_name_plural = "currencies"
        permissions: ClassVar = [
            ("refresh_currencies", "Can refresh the currency catalogue from ChangeNOW")
        ]
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["ticker", "network"], name="currency_pair_unique"),
            models.CheckConstraint(
                condition=~Q(ticker="") & ~Q(network=""), name="currency_pair_present"
            ),
            models.CheckConstraint(
                condition=Q(ticker=Lower("ticker")) & Q(network=Lower("network")),
                name="currency_pair_lower",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.ticker}/{self.network} ({self.name})"


ACCUMULATION_STATES = ["pending", "converting", "converted", "paying", "paid", "written_off"]


class Accumulation(models.Model):
    """One credited NOWPayments payment: the ETH that reached the host wallet, its USD value,
    the fee in force at intake and, once converted, the client's USDT share."""

    class State(models.TextChoices):
        PENDING = "pending"
        CONVERTING = "converting"
        CONVERTED = "converted"
        PAYING = "paying"
        PAID = "paid"
        WRITTEN_OFF = "written_off"

    # The one table of allowed moves. `converting -> pending` and `paying -> converted` are
    # releases: only an order's failure path (proving no money left) or an operator's
    # force-close performs them.
    TRANSITIONS: ClassVar[dict[str, frozenset[str]]] = {
        "pending": frozenset({"converting"}),
        "converting": frozenset({"pending", "converted", "written_off"}),
        "converted": frozenset({"paying"}),
        "paying": frozenset({"converted", "paid", "written_off"}),
        "paid": frozenset(),
        "written_off": frozenset(),
    }

    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="accumulations")
    payment_id = models.CharField(max_length=64)
    order_id = models.CharField(max_length=200, blank=True, default="")
    eth = AmountField(help_text="Gross ETH received (NOWPayments outcome_amount).")
    usd = AmountField(help_text="USD value (NOWPayments price_amount).")
    fee_percent = PercentField(help_text="Platform fee percent snapshotted at intake.")
    usdt = AmountField(null=True, blank=True, help_text="Client's USDT share after conversion.")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PENDING)
    batch = models.ForeignKey(
        "batches.ConversionBatch",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="accumulations",
        db_index=False,  # partial index below
    )
    payout = models.ForeignKey(
        "payouts.Payout",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="accumulations",
        db_index=False,  # partial index below
    )
    created_at = models.DateTimeField(auto_now_add=True)
    state_changed_at = models.DateTimeField(auto_now_add=True)

    # Automatic and operator releases of this row in the current 24 h window: rows that
    # keep failing into new orders raise an alert instead of cycling silently.
    releases = models.PositiveSmallIntegerField(default=0, db_default=0)
    released_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints: ClassVar = [
            # A constraint rather than unique=True: no second (LIKE) index to maintain.
            models.UniqueConstraint(fields=["payment_id"], name="acc_payment_id_unique"),
            models.CheckConstraint(condition=Q(eth__gt=0), name="acc_eth_positive"),
            models.CheckConstraint(condition=Q(usd__gt=0), name="acc_usd_positive"),
            models.CheckConstraint(
                condition=Q(fee_percent__gte=0, fee_percent__lte=100), name="acc_fee_range"
            ),
            models.CheckConstraint(
                condition=Q(usdt__isnull=True) | Q(usdt__gte=0), name="acc_usdt_not_negative"
            ),
            _states_check("acc_state_valid", ACCUMULATION_STATES),
            models.CheckConstraint(
                condition=~Q(state="pending")
                | Q(batch__isnull=True, payout__isnull=True, usdt__isnull=True),
                name="acc_pending_unlinked",
            ),
            models.CheckConstraint(
                condition=~Q(state="converting")
                | Q(batch__isnull=False, payout__isnull=True, usdt__isnull=True),
                name="acc_converting_has_batch",
            ),
            models.CheckConstraint(
                condition=~Q(state="converted")
                | Q(batch__isnull=False, payout__isnull=True, usdt__isnull=False),
                name="acc_converted_has_usdt",
            ),
            models.CheckConstraint(
                condition=~Q(state__in=["paying", "paid"])
                | Q(batch__isnull=False, payout__isnull=False, usdt__isnull=False),
                name="acc_paying_has_payout",
            ),
            models.CheckConstraint(
                condition=~Q(state="written_off") | Q(batch__isnull=False),
                name="acc_written_off_has_batch",
            ),
        ]
        # Every index costs each row move (sweep, distribution) one more write: keep few,
        # and make them partial where most rows would only add NULL entries.
        indexes: ClassVar = [
            # The conversion sweep reads and locks only pending rows, oldest first.
            models.Index(
                fields=["created_at", "id"],
                name="acc_pending_idx",
                condition=Q(state="pending"),
                include=["eth", "usd"],
            ),
            # The payout sweep sums converted USDT per client.
            models.Index(
                fields=["client", "id"],
                name="acc_converted_idx",
                condition=Q(state="converted"),
                include=["usdt"],
            ),
            # The written-off list finance reviews (a few rows, never in a hot path).
            models.Index(
                fields=["id"], name="acc_written_off_idx", condition=Q(state="written_off")
            ),
            models.Index(fields=["batch"], name="acc_batch_idx", condition=Q(batch__isnull=False)),
            models.Index(
                fields=["payout"], name="acc_payout_idx", condition=Q(payout__isnull=False)
            ),
            # Finance looks payments up by NOWPayments' order_id (the merchant's invoice).
            # Written once at intake and never updated, so row moves stay HOT-eligible.
            models.Index(fields=["order_id"], name="acc_order_id_idx", condition=~Q(order_id="")),
        ]

    def __str__(self) -> str:
        return f"payment {self.payment_id} ({format_amount(self.eth)} ETH, {self.state})"


class AccumulationTotal(models.Model):
    """Kept totals of the accumulations per state, so that pages never sum the table.

    Design: append-only deltas. Statement-level triggers on `payouts_accumulation` (migration
    0009) append, for each statement, one row per state whose count or amounts it changed:
    the delta of the whole statement, whatever its size, so a bulk move adds a few rows and
    an intake one. Nothing is ever updated in place, so writers never wait for each other on
    a shared counter (a sweep's open transaction does not hold up intake).
    `accumulation_totals_compact` (the watchdog) folds the rows into one per state. A
    state's total at any snapshot is the sum of its rows; reconcile checks it against the
    accumulations themselves."""

    state = models.CharField(max_length=16)
    row_count = models.BigIntegerField()
    # Sums of numeric(38, 18) amounts: ten more digits of headroom.
    eth = AmountField(max_digits=48)
    usd = AmountField(max_digits=48)
    usdt = AmountField(max_digits=48)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints: ClassVar = [_states_check("acctotal_state_valid", ACCUMULATION_STATES)]

    def __str__(self) -> str:
        return f"{self.state}: {self.row_count:+d} rows"


class FundedOrder(models.Model):
    """A funded exchange order: reserve rows -> create a ChangeNOW exchange -> send funds from
    the host wallet to its payin address -> follow it to a terminal status. Conversion batches
    and payouts are its two kinds."""

    class State(models.TextChoices):
        RESERVED = "reserved"
        EXCHANGE_CREATED = "exchange_created"
        FUNDS_SENT = "funds_sent"
        CONVERTING = "converting"
        COMPLETED = "completed"
        FAILED = "failed"
        NEEDS_ATTENTION = "needs_attention"
        FORCE_CLOSED = "force_closed"

    TERMINAL: ClassVar[frozenset[str]] = frozenset({"completed", "failed", "force_closed"})
    # Any non-terminal order may be force-closed by an operator; `failed` is reachable only
    # before funds could have left; after `funds_sent` only an operator closes an order.
    TRANSITIONS: ClassVar[dict[str, frozenset[str]]] = {
        "reserved": frozenset(
            {"exchange_created", "funds_sent", "failed", "needs_attention", "force_closed"}
        ),
        "exchange_created": frozenset({"funds_sent", "failed", "needs_attention", "force_closed"}),
        "funds_sent": frozenset({"converting", "completed", "needs_attention", "force_closed"}),
        "converting": frozenset({"completed", "needs_attention", "force_closed"}),
        "needs_attention": frozenset(
            {"exchange_created", "funds_sent", "converting", "completed", "force_closed"}
        ),
        "completed": frozenset(),
        "failed": frozenset(),
        "force_closed": frozenset(),
    }

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    state = models.CharField(max_length=20, choices=State.choices, default=State.RESERVED)
    row_count = models.PositiveIntegerField()
    exchange_id = models.CharField(max_length=64, blank=True, default="")
    payin_address = models.CharField(max_length=128, blank=True, default="")
    payin_extra_id = models.CharField(max_length=128, blank=True, default="")
    provider_status = models.CharField(max_length=32, blank=True, default="")
    last_error = models.TextField(blank=True, default="")
    last_error_code = models.CharField(max_length=48, blank=True, default="")
    retry_count = models.PositiveIntegerField(
        default=0, help_text="Consecutive failed attempts of the current step."
    )
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="Backoff: the engine leaves the order alone until then."
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    state_changed_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # What ChangeNOW reports after a failed, refunded or expired exchange (its word only).
    provider_refund_amount = AmountField(null=True, blank=True)
    provider_refund_hash = models.CharField(max_length=128, blank=True, default="", db_default="")
    # A refund proved on chain by an operator's force-close (the rows were then released).
    refund_tx_hash = models.CharField(max_length=66, blank=True, default="", db_default="")
    refund_received = AmountField(
        null=True, blank=True, help_text="What the refund transaction brought back (chain)."
    )
    loss_amount = AmountField(
        null=True, blank=True, help_text="Deposit less proved refund: borne by the platform."
    )
    loss_asset = models.CharField(max_length=8, blank=True, default="", db_default="")

    class Meta:
        abstract = True

    @property
    def is_terminal(self) -> bool:
        return self.state in self.TERMINAL


def order_constraints(prefix: str) -> list[models.CheckConstraint]:
    """Constraints every kind of funded order shares."""
    states = [s.value for s in FundedOrder.State]
    return [
        _states_check(f"{prefix}_state_valid", states),
        models.CheckConstraint(condition=Q(row_count__gt=0), name=f"{prefix}_has_rows"),
        # Funds may only ever go to a payin address we stored with its exchange.
        models.CheckConstraint(
            condition=~Q(state="exchange_created") | (~Q(exchange_id="") & ~Q(payin_address="")),
            name=f"{prefix}_exchange_stored",
        ),
        models.CheckConstraint(
            condition=~Q(state="completed") | Q(completed_at__isnull=False),
            name=f"{prefix}_completed_at",
        ),
    ]


class Payout(FundedOrder):
    """One payment of a client's converted USDT to the client's wallet, with the destination
    snapshotted at reservation (a later address change does not redirect it)."""

    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="payouts")
    usdt_amount = AmountField(help_text="Exactly the sum of the usdt of its rows.")
    currency = models.CharField(max_length=16)
    network = models.CharField(max_length=16)
    address = models.CharField(max_length=128)
    extra_id = models.CharField(max_length=128, blank=True, default="")
    amount_to = AmountField(null=True, blank=True, help_text="What the client received.")
    # Set when the sweep split the client's USDT over several payouts (above ChangeNOW's
    # maximum): the total of them all, so the dual-control limit sees the whole sum.
    split_total_usdt = AmountField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints: ClassVar = [
            *order_constraints("payout"),
            models.CheckConstraint(condition=Q(usdt_amount__gt=0), name="payout_amount_positive"),
        ]
        indexes: ClassVar = [
            models.Index(
                fields=["state"],
                name="payout_open_idx",
                condition=~Q(state__in=["completed", "failed", "force_closed"]),
            ),
        ]

    def __str__(self) -> str:
        return f"payout {str(self.id)[:8]} ({format_amount(self.usdt_amount)} USDT, {self.state})"


class AuditEvent(models.Model):
    """Append-only record of every state change and every operator decision.

    Updates and deletes are refused by a database trigger (migration 0002), so not even a
    bug in our own code can rewrite history.
    """

    object_type = models.CharField(max_length=32)
    object_id = models.CharField(max_length=64)
    kind = models.CharField(max_length=48)
    from_state = models.CharField(max_length=20, blank=True, default="")
    to_state = models.CharField(max_length=20, blank=True, default="")
    actor = models.CharField(max_length=150, help_text="user:<name> or system:<job>")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True
    )
    reason = models.TextField(blank=True, default="")
    data = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        indexes: ClassVar = [
            models.Index(fields=["object_type", "object_id", "id"], name="audit_object_idx"),
        ]
        constraints: ClassVar = [
            models.CheckConstraint(condition=~Q(actor=""), name="audit_actor_present"),
        ]

    def __str__(self) -> str:
        return f"{self.object_type}:{self.object_id} {self.kind} {self.from_state}->{self.to_state}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise RuntimeError("audit events are append-only")
        super().save(*args, **kwargs)


class RuntimeSettings(models.Model):
    """The single row of run-time settings, read fresh at every job run and edited in admin.

    It is created on first read from CONVERSION_THRESHOLD_USD and PLATFORM_FEE_PERCENT; after
    that only `runtime_settings_update` changes it, with an audit event per change.
    """

    id = models.PositiveSmallIntegerField(primary_key=True, default=1, editable=False)
    conversion_threshold_usd = AmountField(default=Decimal(20))
    platform_fee_percent = PercentField(default=Decimal(3))
    max_pending_age_minutes = models.PositiveIntegerField(
        default=24 * 60, help_text="Sweep anyway once the oldest pending payment is this old."
    )
    conversion_sweep_interval_seconds = models.PositiveIntegerField(default=300)
    payout_sweep_interval_seconds = models.PositiveIntegerField(default=300)
    advance_interval_seconds = models.PositiveIntegerField(default=60)
    stuck_reserved_minutes = models.PositiveIntegerField(default=10)
    stuck_exchange_created_minutes = models.PositiveIntegerField(default=30)
    stuck_funds_sent_minutes = models.PositiveIntegerField(default=120)
    stuck_converting_minutes = models.PositiveIntegerField(default=360)
    conversions_paused = models.BooleanField(default=False)
    payouts_paused = models.BooleanField(default=False)
    confirmations = models.PositiveIntegerField(
        default=12, help_text="Blocks deep before a transfer counts as final."
    )
    stuck_broadcast_minutes = models.PositiveIntegerField(
        default=15, help_text="A broadcast transfer unmined this long is re-sent at higher fees."
    )
    max_fee_per_gas_gwei = AmountField(
        default=Decimal(200), help_text="Ceiling for any fee cap the engine signs (gwei)."
    )
    direct_payout_min_usdt = AmountField(
        default=Decimal(5), help_text="Direct USDT payouts below this wait for more."
    )
    dual_control_over_usdt = AmountField(
        default=Decimal(10000), help_text="Payouts above this need a second person's approval."
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "run-time settings"
        verbose_name_plural = "run-time settings"
        # The finance roles' custom permissions live here, on the one settings object.
        permissions: ClassVar = [
            ("sync_orders", "Can poll providers for orders (sync now)"),
            ("retry_orders", "Can retry a stopped order step"),
            ("resolve_webhooks", "Can resolve unmatched webhook events"),
            ("export_data", "Can export lists to CSV"),
            ("force_close_orders", "Can force-close orders"),
            ("force_complete_orders", "Can force-complete orders from the provider"),
            ("pause_jobs", "Can pause and resume conversions and payouts"),
        ]
        constraints: ClassVar = [
            models.CheckConstraint(condition=Q(id=1), name="settings_singleton"),
            models.CheckConstraint(
                condition=Q(conversion_threshold_usd__gt=0), name="settings_threshold_positive"
            ),
            models.CheckConstraint(
                condition=Q(platform_fee_percent__gte=0, platform_fee_percent__lte=100),
                name="settings_fee_range",
            ),
            models.CheckConstraint(
                condition=Q(max_pending_age_minutes__gt=0)
                & Q(conversion_sweep_interval_seconds__gt=0)
                & Q(payout_sweep_interval_seconds__gt=0)
                & Q(advance_interval_seconds__gt=0),
                name="settings_intervals_positive",
            ),
            models.CheckConstraint(
                condition=Q(confirmations__gt=0)
                & Q(stuck_broadcast_minutes__gt=0)
                & Q(max_fee_per_gas_gwei__gt=0)
                & Q(direct_payout_min_usdt__gte=0)
                & Q(dual_control_over_usdt__gte=0),
                name="settings_wallet_limits_valid",
            ),
        ]

    def __str__(self) -> str:
        return "run-time settings"


class OrderLinkMixin(models.Model):
    """Belongs to exactly one funded order: a conversion batch or a payout."""

    batch = models.ForeignKey(
        "batches.ConversionBatch", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    payout = models.ForeignKey(
        "payouts.Payout", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        abstract = True

    @property
    def order_id(self) -> object:
        return self.batch_id or self.payout_id


def one_order_constraint(name: str) -> models.CheckConstraint:
    return models.CheckConstraint(
        condition=Q(batch__isnull=False, payout__isnull=True)
        | Q(batch__isnull=True, payout__isnull=False),
        name=name,
    )


class ExchangeAttempt(OrderLinkMixin):
    """Every ChangeNOW exchange ever requested for an order, kept forever (never replaced).

    The row is written *before* the create call (status `creating`), so a crash or timeout
    leaves evidence that an exchange may exist at ChangeNOW.
    """

    exchange_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    status = models.CharField(max_length=32, default="creating")
    from_currency = models.CharField(max_length=16)
    from_network = models.CharField(max_length=16, blank=True, default="")
    to_currency = models.CharField(max_length=16)
    to_network = models.CharField(max_length=16, blank=True, default="")
    amount_from = AmountField()
    expected_amount_to = AmountField(null=True, blank=True)
    amount_to = AmountField(null=True, blank=True)
    payin_address = models.CharField(max_length=128, blank=True, default="")
    payin_extra_id = models.CharField(max_length=128, blank=True, default="")
    payout_address = models.CharField(max_length=128, blank=True, default="")
    payout_extra_id = models.CharField(max_length=128, blank=True, default="")
    payin_hash = models.CharField(max_length=128, blank=True, default="")
    payout_hash = models.CharField(max_length=128, blank=True, default="")
    valid_until = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    status_history = models.JSONField(default=list, blank=True, encoder=DjangoJSONEncoder)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints: ClassVar = [
            one_order_constraint("attempt_one_order"),
            models.CheckConstraint(condition=Q(amount_from__gt=0), name="attempt_amount_pos"),
        ]

    def __str__(self) -> str:
        return f"exchange {self.exchange_id or '(creating)'} {self.status}"


class Transfer(OrderLinkMixin):
    """One payment from the host wallet for an order.

    Written as an *intent* (no nonce) before signing; a nonce is taken only when the first
    transaction is signed, so an intent that never got signed holds nothing. Every
    transaction signed at that nonce (the original, speed-ups, a cancel) is kept as a
    `TransferTx`; `tx_hash` / `raw_tx` are the newest one, re-broadcast as is. Whichever
    transaction mines is recorded in `mined_hash`; the others are dead.

    States: intent -> signed -> broadcast -> mined (payment mined, `final_at` once deep
    enough) | reverted (mined without effect) | cancelled (a cancel took the nonce) | dead
    (the nonce was used by something else and none of our hashes mined) | closed (an
    intent closed with its order, never signed). `abandoned` is the first round's name for
    a dropped transfer and is only found on old rows."""

    class State(models.TextChoices):
        INTENT = "intent"
        SIGNED = "signed"
        BROADCAST = "broadcast"
        MINED = "mined"
        REVERTED = "reverted"
        CANCELLED = "cancelled"
        DEAD = "dead"
        CLOSED = "closed"
        ABANDONED = "abandoned"

    LIVE: ClassVar[tuple[str, ...]] = ("intent", "signed", "broadcast", "mined")
    # Signed and not known to be settled on chain: could still be mined.
    PENDING: ClassVar[tuple[str, ...]] = ("signed", "broadcast")
    # States that hold their nonce (the chain used it, or it may still use it).
    HOLDS_NONCE: ClassVar[tuple[str, ...]] = (
        "signed",
        "broadcast",
        "mined",
        "reverted",
        "cancelled",
    )

    attempt = models.PositiveSmallIntegerField(default=1)
    asset = models.CharField(max_length=8)
    amount = AmountField()
    to_address = models.CharField(max_length=64)
    from_address = models.CharField(max_length=64)
    chain_id = models.PositiveBigIntegerField()
    nonce = models.PositiveBigIntegerField(null=True, blank=True)
    state = models.CharField(max_length=12, choices=State.choices, default=State.INTENT)
    raw_tx = models.TextField(blank=True, default="")
    tx_hash = models.CharField(max_length=66, blank=True, default="", db_index=True)
    max_fee_per_gas = models.DecimalField(max_digits=38, decimal_places=0, null=True, blank=True)
    max_priority_fee_per_gas = models.DecimalField(
        max_digits=38, decimal_places=0, null=True, blank=True
    )
    broadcast_count = models.PositiveIntegerField(default=0)
    replacements = models.PositiveIntegerField(default=0, db_default=0)
    mined_hash = models.CharField(max_length=66, blank=True, default="", db_default="")
    receipt_status = models.PositiveSmallIntegerField(null=True, blank=True)
    block_number = models.PositiveBigIntegerField(null=True, blank=True)
    block_hash = models.CharField(max_length=66, blank=True, default="", db_default="")
    gas_fee_wei = models.DecimalField(
        max_digits=38, decimal_places=0, null=True, blank=True, help_text="gasUsed x price."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    signed_at = models.DateTimeField(null=True, blank=True)
    last_signed_at = models.DateTimeField(null=True, blank=True)
    broadcast_at = models.DateTimeField(null=True, blank=True)
    mined_at = models.DateTimeField(null=True, blank=True)
    final_at = models.DateTimeField(null=True, blank=True)
    note = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-id"]
        constraints: ClassVar = [
            one_order_constraint("transfer_one_order"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="transfer_amount_pos"),
            models.CheckConstraint(
                condition=Q(
                    state__in=[
                        "intent",
                        "signed",
                        "broadcast",
                        "mined",
                        "reverted",
                        "cancelled",
                        "dead",
                        "closed",
                        "abandoned",
                    ]
                ),
                name="transfer_state_valid",
            ),
            models.CheckConstraint(
                condition=Q(state__in=["intent", "closed", "abandoned"])
                | (~Q(raw_tx="") & ~Q(tx_hash="") & Q(nonce__isnull=False)),
                name="transfer_signed_has_bytes",
            ),
            models.CheckConstraint(
                condition=~Q(state__in=["intent", "closed"]) | Q(raw_tx=""),
                name="transfer_unsigned_has_no_bytes",
            ),
            # Never two live sends for one order.
            models.UniqueConstraint(
                fields=["batch"],
                condition=Q(state__in=["intent", "signed", "broadcast", "mined"]),
                name="transfer_one_live_per_batch",
            ),
            models.UniqueConstraint(
                fields=["payout"],
                condition=Q(state__in=["intent", "signed", "broadcast", "mined"]),
                name="transfer_one_live_per_payout",
            ),
            models.UniqueConstraint(fields=["batch", "attempt"], name="transfer_batch_attempt"),
            models.UniqueConstraint(fields=["payout", "attempt"], name="transfer_payout_attempt"),
            # One nonce carries one transfer: two of our payments can never both be mined.
            models.UniqueConstraint(
                fields=["from_address", "chain_id", "nonce"],
                condition=Q(state__in=["signed", "broadcast", "mined", "reverted", "cancelled"]),
                name="transfer_nonce_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.amount} {self.asset} -> {self.to_address} ({self.state})"


class TransferTx(models.Model):
    """Every transaction ever signed for a transfer, all at the transfer's nonce: the
    original, each speed-up and a cancel. Kept for ever: reconcile looks each one up on
    chain, and whichever mines is the one that counts."""

    class Kind(models.TextChoices):
        ORIGINAL = "original"
        SPEED_UP = "speed_up"
        CANCEL = "cancel"

    transfer = models.ForeignKey(Transfer, on_delete=models.PROTECT, related_name="txs")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    tx_hash = models.CharField(max_length=66, unique=True)
    raw_tx = models.TextField()
    nonce = models.PositiveBigIntegerField()
    max_fee_per_gas = models.DecimalField(max_digits=38, decimal_places=0, null=True, blank=True)
    max_priority_fee_per_gas = models.DecimalField(
        max_digits=38, decimal_places=0, null=True, blank=True
    )
    actor = models.CharField(max_length=150, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        # The admin finds a transaction by the first characters of its hash, as pages show it.
        indexes: ClassVar = [
            models.Index(
                fields=["tx_hash"], name="transfertx_hash_prefix", opclasses=["varchar_pattern_ops"]
            )
        ]
        constraints: ClassVar = [
            models.CheckConstraint(
                condition=Q(kind__in=["original", "speed_up", "cancel"]), name="transfertx_kind"
            ),
            models.CheckConstraint(
                condition=~Q(raw_tx="") & ~Q(tx_hash=""), name="transfertx_has_bytes"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.tx_hash[:12]} (nonce {self.nonce})"


class ApprovalRequest(models.Model):
    """Dual control (DESIGN.md 12.5): an action on money asked for by one person and decided
    by another with the approver role. It records what was asked (action, target, options),
    why, and what it will do (the plan shown when asked); the decision and what executing it
    did. The action is re-checked when it is executed: the order may have moved on.

    States: pending -> executed | failed (approved and run; failed: refused at execution)
    | rejected | expired (24 h). One pending request per action and target. A payout above
    `dual_control_over_usdt` gets a `release_payout` request from the system and waits in
    `reserved` until it is executed."""

    class State(models.TextChoices):
        PENDING = "pending"
        EXECUTED = "executed"
        FAILED = "failed"
        REJECTED = "rejected"
        EXPIRED = "expired"

    class Action(models.TextChoices):
        FORCE_CLOSE = "force_close", "force-close"
        FORCE_COMPLETE = "force_complete", "force-complete"
        SPEED_UP = "speed_up", "speed up the transfer"
        CANCEL_TRANSFER = "cancel_transfer", "cancel the transfer"
        RELEASE_PAYOUT = "release_payout", "release a large payout"
        SETTINGS_CHANGE = "settings_change", "change run-time settings"
        CLIENT_DESTINATION = "client_destination", "change a client's payout destination"

    OPEN: ClassVar[tuple[str, ...]] = ("pending",)
    LIFETIME_HOURS: ClassVar[int] = 24

    action = models.CharField(max_length=24, choices=Action.choices)
    target_kind = models.CharField(max_length=12)  # batch | payout | settings | client
    target_id = models.CharField(max_length=64)
    options = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    plan = models.TextField(help_text="What the action will do, as shown when it was asked.")
    reason = models.TextField()
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="approval_requests",
        help_text="Empty: asked by the system (a large payout).",
    )
    requested_actor = models.CharField(max_length=150)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    expires_at = models.DateTimeField()
    state = models.CharField(max_length=12, choices=State.choices, default=State.PENDING)
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="approval_decisions",
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True, default="")
    result = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-id"]
        permissions: ClassVar = [
            ("request_changes", "Can ask for an action on money (dual control)"),
            ("approve_changes", "Can approve or reject others' requests (dual control)"),
        ]
        constraints: ClassVar = [
            _states_check(
                "approval_state_valid", ["pending", "executed", "failed", "rejected", "expired"]
            ),
            models.CheckConstraint(
                condition=Q(
                    action__in=[
                        "force_close",
                        "force_complete",
                        "speed_up",
                        "cancel_transfer",
                        "release_payout",
                        "settings_change",
                        "client_destination",
                    ]
                ),
                name="approval_action_valid",
            ),
            models.CheckConstraint(
                condition=Q(target_kind__in=["batch", "payout", "settings", "client"]),
                name="approval_target_kind",
            ),
            models.CheckConstraint(condition=~Q(reason=""), name="approval_reason_present"),
            # Nobody decides their own request.
            models.CheckConstraint(
                condition=Q(decided_by__isnull=True)
                | Q(requested_by__isnull=True)
                | ~Q(decided_by=models.F("requested_by")),
                name="approval_four_eyes",
            ),
            models.CheckConstraint(
                condition=Q(state__in=["pending", "expired"])
                | (Q(decided_by__isnull=False) & Q(decided_at__isnull=False)),
                name="approval_decision_recorded",
            ),
            models.UniqueConstraint(
                fields=["action", "target_kind", "target_id"],
                condition=Q(state="pending"),
                name="approval_one_open_per_target",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.target_kind} {self.target_id[:8]} ({self.state})"
