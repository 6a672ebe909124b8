"""Units of background work with leases, so nothing enqueued is lost.

The database holds every unit's state; the broker only rings the doorbell.
A worker claims a unit by taking its lease (owner, expiry) and renews it with
a heartbeat; the sweeper re-enqueues units whose lease expired (the worker
died) or whose message was lost, up to a maximum number of attempts.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


class WorkState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class WorkItem(models.Model):
    kind = models.CharField(max_length=80)
    ref = models.CharField(max_length=120)
    queue = models.CharField(max_length=32, default="default")
    state = models.CharField(max_length=16, choices=WorkState.choices, default=WorkState.QUEUED)
    attempts = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=5)
    lease_owner = models.CharField(max_length=120, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "ref"], name="workitem_kind_ref_unique"),
            models.CheckConstraint(
                condition=~Q(state="running") | Q(lease_expires_at__isnull=False),
                name="workitem_running_has_lease",
            ),
        ]
        indexes = [models.Index(fields=["state", "lease_expires_at"])]

    def __str__(self) -> str:
        return f"{self.kind}:{self.ref} ({self.state})"
