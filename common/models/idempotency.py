"""``Idempotency-Key`` records: one per (organisation, endpoint, key), kept 24 hours."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from common.models.accounts import Organisation

__all__ = ["IdempotencyRecord", "IdempotencyState"]


class IdempotencyState(models.TextChoices):
    IN_PROGRESS = "in_progress", "In progress"
    DONE = "done", "Done"


class IdempotencyRecord(models.Model):
    """An ``Idempotency-Key`` seen for (organisation, endpoint), kept 24 hours, and its response."""

    organisation = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="+")
    endpoint = models.CharField(max_length=100)
    key = models.CharField(max_length=200)
    request_hash = models.CharField(max_length=64)
    state = models.CharField(max_length=16, choices=IdempotencyState.choices)
    # While in progress: until when the first request owns the key (a crashed one lets go then).
    locked_until = models.DateTimeField()
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        # Born in marketplace (orders were its first user); moved here so every app's
        # creating endpoints share it. The table kept its name: the move touched no rows.
        db_table = "marketplace_idempotencyrecord"
        constraints = [
            models.UniqueConstraint(
                fields=["organisation", "endpoint", "key"], name="idempotencyrecord_unique_key"
            )
        ]
        indexes = [models.Index(fields=["created_at"], name="marketplace_created_12982d_idx")]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.key} ({self.state})"
