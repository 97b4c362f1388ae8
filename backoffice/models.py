"""The raw-event store of inbound webhooks.

Design: every inbound webhook body is kept as received, with its verification outcome and
what applying it did, unique on (provider, event_id) so a replay is recognised. Events that
could not be applied (unknown client, wrong currency, ...) stay `unmatched` until finance
resolves them; nothing is lost.
"""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.db import models
from django.db.models import Q

WEBHOOK_OUTCOMES = [
    "applied",
    "duplicate",
    "ignored",
    "unmatched",
    "rejected",
    "nudged",
    "unknown_exchange",
    "resolved",
]


class WebhookEvent(models.Model):
    class Provider(models.TextChoices):
        NOWPAYMENTS = "nowpayments"
        CHANGENOW = "changenow"

    class Outcome(models.TextChoices):
        APPLIED = "applied", "applied (credited)"
        DUPLICATE = "duplicate", "duplicate of a credited payment"
        IGNORED = "ignored", "ignored (not a finished payment)"
        UNMATCHED = "unmatched", "unmatched (needs finance)"
        REJECTED = "rejected", "rejected (signature or body)"
        NUDGED = "nudged", "nudge: sync enqueued"
        UNKNOWN_EXCHANGE = "unknown_exchange", "nudge for an exchange we do not know"
        RESOLVED = "resolved", "resolved by finance"

    provider = models.CharField(max_length=16, choices=Provider.choices)
    event_id = models.CharField(max_length=200)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    signature_valid = models.BooleanField()
    outcome = models.CharField(max_length=20, choices=Outcome.choices)
    reason = models.TextField(blank=True, default="")
    body = models.TextField(
        help_text="The raw body as received (UTF-8, undecodable bytes escaped)."
    )
    headers = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True, default="")
    payment_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    reference = models.CharField(
        max_length=200, blank=True, default="", help_text="order_id or exchange id"
    )
    accumulation = models.ForeignKey(
        "payouts.Accumulation", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-id"]
        constraints: ClassVar = [
            models.UniqueConstraint(fields=["provider", "event_id"], name="webhook_event_unique"),
            models.CheckConstraint(
                condition=Q(outcome__in=WEBHOOK_OUTCOMES), name="webhook_outcome_valid"
            ),
        ]
        indexes: ClassVar = [
            models.Index(
                fields=["received_at"],
                name="webhook_unmatched_idx",
                condition=Q(outcome="unmatched"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider} {self.event_id} ({self.outcome})"
