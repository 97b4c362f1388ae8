"""Conversion batches: the ETH->USDT kind of funded order.

Design: a batch is created by the sweep in the same statement that moves its rows, so a
batch without rows never exists, and its totals are what was moved, not what was summed
before. On completion the USDT received is split exactly over its rows (see
`batches.services.batch_distribute`); `usdt_received = sum(row usdt) + platform_usdt`.
"""

from __future__ import annotations

from typing import ClassVar

from django.db import models
from django.db.models import Q

from integrations.assets import format_amount
from payouts.models import AmountField, FundedOrder, order_constraints


class ConversionBatch(FundedOrder):
    # Only a direct USDT payout skips the exchange; a batch always has one before funding.
    TRANSITIONS: ClassVar[dict[str, frozenset[str]]] = {
        **FundedOrder.TRANSITIONS,
        "reserved": FundedOrder.TRANSITIONS["reserved"] - {"funds_sent"},
    }

    class Trigger(models.TextChoices):
        THRESHOLD = "threshold"
        MAX_AGE = "max_age"

    eth_total = AmountField(help_text="Sum of the eth of the rows moved into this batch.")
    usd_total = AmountField(help_text="Sum of the usd of the rows moved into this batch.")
    threshold_usd = AmountField(help_text="Conversion threshold in force when swept.")
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    usdt_received_raw = AmountField(
        null=True, blank=True, help_text="ChangeNOW amountTo as reported."
    )
    usdt_received = AmountField(
        null=True, blank=True, help_text="amountTo quantized down to 6 decimals."
    )
    exchange_dust = AmountField(
        null=True, blank=True, help_text="Digits of amountTo below 6 decimals."
    )
    platform_usdt = AmountField(
        null=True, blank=True, help_text="Platform fee plus rounding dust of the split."
    )

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "conversion batch"
        verbose_name_plural = "conversion batches"
        constraints: ClassVar = [
            *order_constraints("batch"),
            models.CheckConstraint(condition=Q(eth_total__gt=0), name="batch_eth_positive"),
            models.CheckConstraint(condition=Q(usd_total__gt=0), name="batch_usd_positive"),
            models.CheckConstraint(condition=Q(threshold_usd__gt=0), name="batch_threshold_pos"),
            models.CheckConstraint(
                condition=Q(trigger__in=["threshold", "max_age"]), name="batch_trigger_valid"
            ),
            models.CheckConstraint(
                condition=~Q(state="completed")
                | Q(
                    usdt_received__isnull=False,
                    usdt_received_raw__isnull=False,
                    platform_usdt__isnull=False,
                    exchange_dust__isnull=False,
                ),
                name="batch_completed_has_amounts",
            ),
            models.CheckConstraint(
                condition=Q(usdt_received__isnull=True) | Q(usdt_received__gte=0),
                name="batch_received_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(platform_usdt__isnull=True) | Q(platform_usdt__gte=0),
                name="batch_platform_not_negative",
            ),
        ]
        indexes: ClassVar = [
            models.Index(
                fields=["state"],
                name="batch_open_idx",
                condition=~Q(state__in=["completed", "failed", "force_closed"]),
            ),
        ]

    def __str__(self) -> str:
        return f"batch {str(self.id)[:8]} ({format_amount(self.eth_total)} ETH, {self.state})"
