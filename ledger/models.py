"""The double-entry ledger (DESIGN.md section 12.2): accounts per asset, transactions, legs.

Design:
- A leg's amount is signed: debits are positive, credits negative, so the legs of one
  transaction sum to zero per asset. Assets (host_wallet, in_transit:<order>) and expenses
  (network_fees, losses) grow with debits; liabilities (clients:<reference>), income
  (platform_fees) and equity (owner_equity) with credits. `balances_get` shows each account
  in its natural sign.
- The database enforces the rules, not this module: a deferred constraint trigger refuses
  a commit in which any transaction's legs do not balance per asset (or has fewer than two
  legs), legs can only be added in the database transaction that created their header, and
  all three tables refuse UPDATE and DELETE (migration 0002).
- Each transaction names its cause (an accumulation, a batch, a payout, a transfer, or an
  on-chain hash for owner transfers); partial unique constraints book each cause once.
"""

from __future__ import annotations

from typing import ClassVar

from django.db import models
from django.db.models import Q

ASSETS = ("eth", "usdt")


class Account(models.Model):
    class Kind(models.TextChoices):
        ASSET = "asset"
        LIABILITY = "liability"
        INCOME = "income"
        EXPENSE = "expense"
        EQUITY = "equity"

    name = models.CharField(max_length=120)
    asset = models.CharField(max_length=8)
    kind = models.CharField(max_length=12, choices=Kind.choices)

    class Meta:
        ordering = ["name", "asset"]
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["name", "asset"], name="ledger_account_name_asset"),
            models.CheckConstraint(condition=Q(asset__in=ASSETS), name="ledger_account_asset"),
            models.CheckConstraint(
                condition=Q(kind__in=["asset", "liability", "income", "expense", "equity"]),
                name="ledger_account_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.asset.upper()})"


class LedgerTransaction(models.Model):
    class Kind(models.TextChoices):
        OPENING = "opening"
        INTAKE = "intake"
        TRANSFER = "transfer"
        BATCH_COMPLETED = "batch_completed"
        PAYOUT_COMPLETED = "payout_completed"
        REFUND = "refund"
        WRITE_OFF = "write_off"
        OWNER_TRANSFER = "owner_transfer"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    memo = models.TextField(blank=True, default="")
    actor = models.CharField(max_length=150)
    tx_hash = models.CharField(max_length=66, blank=True, default="", db_default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    accumulation = models.ForeignKey(
        "payouts.Accumulation", null=True, blank=True, on_delete=models.PROTECT, db_index=False
    )
    batch = models.ForeignKey(
        "batches.ConversionBatch",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        db_index=False,
    )
    payout = models.ForeignKey(
        "payouts.Payout", null=True, blank=True, on_delete=models.PROTECT, db_index=False
    )
    transfer = models.ForeignKey(
        "payouts.Transfer", null=True, blank=True, on_delete=models.PROTECT, db_index=False
    )

    class Meta:
        ordering = ["-id"]
        constraints: ClassVar = [
            models.CheckConstraint(
                condition=Q(
                    kind__in=[
                        "opening",
                        "intake",
                        "transfer",
                        "batch_completed",
                        "payout_completed",
                        "refund",
                        "write_off",
                        "owner_transfer",
                    ]
                ),
                name="ledger_tx_kind",
            ),
            models.CheckConstraint(condition=~Q(actor=""), name="ledger_tx_actor"),
            # Each cause is booked once.
            models.UniqueConstraint(
                fields=["kind"], condition=Q(kind="opening"), name="ledger_once_opening"
            ),
            models.UniqueConstraint(
                fields=["accumulation"],
                condition=Q(kind="intake"),
                name="ledger_once_intake",
            ),
            models.UniqueConstraint(
                fields=["transfer"], condition=Q(kind="transfer"), name="ledger_once_transfer"
            ),
            models.UniqueConstraint(
                fields=["kind", "batch"],
                condition=Q(batch__isnull=False),
                name="ledger_once_per_batch",
            ),
            models.UniqueConstraint(
                fields=["kind", "payout"],
                condition=Q(payout__isnull=False),
                name="ledger_once_per_payout",
            ),
            models.UniqueConstraint(
                fields=["tx_hash"],
                condition=Q(kind="owner_transfer"),
                name="ledger_once_owner_transfer",
            ),
            models.CheckConstraint(
                condition=~Q(kind="owner_transfer") | ~Q(tx_hash=""),
                name="ledger_owner_transfer_has_hash",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"


class Leg(models.Model):
    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="legs"
    )
    # No foreign-key constraint: its check would take a KEY SHARE lock on the account row
    # for every leg, and every intake writes a leg of the one host_wallet account (measured:
    # it more than doubled the intake posting's cost). Legs are only written by joins on
    # existing accounts, and accounts can never be deleted (append-only trigger).
    account = models.ForeignKey(
        Account,
        on_delete=models.PROTECT,
        related_name="legs",
        db_index=False,
        db_constraint=False,
    )
    # numeric(38, 18), like every amount (payouts.models.AmountField), without importing it:
    # the ledger sits below the apps whose movements it books.
    amount = models.DecimalField(max_digits=38, decimal_places=18)

    class Meta:
        ordering = ["id"]
        # A balance sums one account's legs from the index alone.
        indexes: ClassVar = [
            models.Index(
                fields=["account", "transaction"], include=["amount"], name="ledger_leg_acct"
            )
        ]
        constraints: ClassVar = [
            models.CheckConstraint(condition=~Q(amount=0), name="ledger_leg_nonzero"),
        ]

    def __str__(self) -> str:
        return f"{self.account_id}: {self.amount}"
