"""Notifications for an organisation, and the signed webhooks that carry them out.

A notification is what the portal shows; a webhook delivery is the same event
POSTed, signed, to each of the organisation's active endpoints that wants its
kind. Payloads hold ids, states and amounts, never custody records.
"""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils import timezone

from common.models.accounts import Organisation, User
from common.public_ids import PublicIdField


class Notification(models.Model):
    public_id = PublicIdField(prefix="ntf")
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="notifications")
    event_id = models.UUIDField(default=uuid.uuid4, unique=True)
    kind = models.CharField(max_length=80)
    subject = models.CharField(max_length=200)
    payload = models.JSONField(default=dict)
    object_type = models.CharField(max_length=80, blank=True)
    object_id = models.CharField(max_length=80, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["organisation", "-created_at"]),
            models.Index(fields=["organisation", "read_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}"


class WebhookEndpoint(models.Model):
    """A URL that receives the organisation's events, signed with ``secret``.

    The secret is kept as it was generated, because signing needs it; it is
    shown once, when the endpoint is created, and never returned again.
    """

    public_id = PublicIdField(prefix="whk")
    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=500)
    description = models.CharField(max_length=200, blank=True)
    secret = models.CharField(max_length=100)
    # Event kinds to send: exact ("order.paid") or a family ("order.*"); empty means all.
    event_kinds = models.JSONField(default=list, blank=True)
    active = models.BooleanField(default=True)
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    disabled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pk"]

    def __str__(self) -> str:
        return f"webhook {self.pk} -> {self.url}"

    def wants(self, kind: str) -> bool:
        """Whether this endpoint's filter lets events of ``kind`` through."""
        if not self.event_kinds:
            return True
        for pattern in self.event_kinds:
            if pattern == kind or (pattern.endswith(".*") and kind.startswith(pattern[:-1])):
                return True
        return False


class DeliveryState(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class WebhookDelivery(models.Model):
    """One event for one endpoint, with its attempts; ``event_id`` is the receiver's idempotency key."""

    public_id = PublicIdField(prefix="dlv")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event_id = models.UUIDField(default=uuid.uuid4)
    kind = models.CharField(max_length=80)
    payload = models.JSONField(default=dict)
    state = models.CharField(max_length=16, choices=DeliveryState.choices, default=DeliveryState.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "event_id"], name="webhookdelivery_once_per_endpoint"
            ),
            models.CheckConstraint(
                condition=~Q(state="delivered") | Q(delivered_at__isnull=False),
                name="webhookdelivery_delivered_has_time",
            ),
        ]
        indexes = [
            models.Index(fields=["state", "next_attempt_at"]),
            models.Index(fields=["endpoint", "-created_at"]),
        ]

    def __str__(self) -> str:
        return f"delivery {self.event_id} ({self.state})"
