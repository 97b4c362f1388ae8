"""The raw-event store of inbound webhooks.

Design: every inbound webhook body is kept as received (bytes, `bytea`: NUL bytes, invalid
UTF-8 and lone surrogate escapes are stored, never crashed on), with its verification outcome and
what applying it did, unique on (provider, event_id) so a replay is recognised. Events that
could not be applied (unknown client, wrong currency, ...) stay `unmatched` until finance
resolves them; nothing is lost.
"""

from __future__ import annotations

from typing import Any, ClassVar

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


class RawBodyField(models.BinaryField):
    """A body byte for byte. Text handed to it (older callers, fixtures) is kept as its UTF-8,
    and reads always give `bytes`, whichever driver is in use."""

    def get_prep_value(self, value: Any) -> Any:
        if isinstance(value, str):
            value = value.encode("utf-8", "backslashreplace")
        return super().get_prep_value(value)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> bytes | None:
        return bytes(value) if value is not None else None

    def to_python(self, value: Any) -> Any:
        if isinstance(value, memoryview):
            return bytes(value)
        return super().to_python(value)


def readable_body(body: bytes | str) -> str:
    """A stored body for people: UTF-8 where it is valid, every other byte and every control
    character but newline and tab as an escape, so nothing invisible hides in it."""
    if isinstance(body, str):
        body = body.encode("utf-8", "backslashreplace")
    text = bytes(body).decode("utf-8", errors="backslashreplace")
    return "".join(ch if ch in "\n\t" or ch.isprintable() else ascii(ch)[1:-1] for ch in text)


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
    body = RawBodyField(help_text="The raw body as received, byte for byte.")
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

    @property
    def body_text(self) -> str:
        return readable_body(self.body or b"")


class JobRun(models.Model):
    """Heartbeat of a scheduled job: one row per run with its outcome and a short summary.

    A job that raised is a `failed` run with the error, never a silent zero; the watchdog and
    /healthz read the latest runs to find a scheduler that stopped."""

    class Outcome(models.TextChoices):
        RUNNING = "running"
        OK = "ok"
        FAILED = "failed"

    name = models.CharField(max_length=64)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices, default=Outcome.RUNNING)
    summary = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-started_at"]
        indexes: ClassVar = [
            models.Index(fields=["name", "-started_at"], name="jobrun_name_started_idx"),
        ]
        constraints: ClassVar = [
            models.CheckConstraint(
                condition=Q(outcome__in=["running", "ok", "failed"]), name="jobrun_outcome_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.started_at:%Y-%m-%d %H:%M:%S} {self.outcome}"


class Alert(models.Model):
    """One incident the watchdog or reconcile raised. At most one open alert per `key`, so a
    condition seen on every tick notifies once; it is resolved when the condition clears or by
    a person, and can be acknowledged meanwhile."""

    class Status(models.TextChoices):
        OPEN = "open"
        ACKNOWLEDGED = "acknowledged"
        RESOLVED = "resolved"

    key = models.CharField(max_length=200)
    kind = models.CharField(max_length=48)
    severity = models.CharField(max_length=8, default="error")
    message = models.TextField()
    link = models.CharField(max_length=300, blank=True, default="")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.OPEN)
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now_add=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.CharField(max_length=150, blank=True, default="")

    class Meta:
        ordering = ["-last_seen_at"]
        constraints: ClassVar = [
            models.UniqueConstraint(
                fields=["key"], condition=~Q(status="resolved"), name="alert_one_open_per_key"
            ),
            models.CheckConstraint(
                condition=Q(status__in=["open", "acknowledged", "resolved"]),
                name="alert_status_valid",
            ),
        ]
        indexes: ClassVar = [
            models.Index(fields=["status", "-last_seen_at"], name="alert_status_idx"),
        ]

    def __str__(self) -> str:
        return f"[{self.status}] {self.kind}: {self.message[:80]}"
