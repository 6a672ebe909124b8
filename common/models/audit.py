"""The append-only, hash-chained audit log (see DESIGN.md "Audit log").

Rows hold ids and names, never foreign keys, so deleting an organisation or a
user never touches its history. An event is written *pending* (no ``seq``,
``prev_hash`` or ``hash``) in the audited action's transaction; the sequencer
(``common.audit.audit_integrate``) fills those three in, in batches, and
nothing else ever changes a row.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class AuditEvent(models.Model):
    # None while pending: assigned by the sequencer, with prev_hash and hash.
    seq = models.BigIntegerField(unique=True, null=True, blank=True)
    at = models.DateTimeField(default=timezone.now)
    actor_id = models.BigIntegerField(null=True, blank=True)
    actor_name = models.CharField(max_length=254, blank=True)
    organisation_id = models.BigIntegerField(null=True, blank=True)
    organisation_name = models.CharField(max_length=120, blank=True)
    action = models.CharField(max_length=80)
    object_type = models.CharField(max_length=80, blank=True)
    object_id = models.CharField(max_length=80, blank=True)
    details = models.JSONField(default=dict)
    prev_hash = models.CharField(max_length=64, blank=True, default="")
    hash = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        # Integrated events in chain order, then pending ones (no seq yet) in append order,
        # the same on every backend (SQLite sorts NULL first, Postgres last).
        ordering = [models.F("seq").asc(nulls_last=True), "id"]
        indexes = [
            models.Index(fields=["organisation_id", "at"]),
            models.Index(fields=["action", "at"]),
            models.Index(fields=["actor_id", "at"]),
            # Lookups by object: the console's object filter, a grant's stream opens.
            models.Index(fields=["object_type", "object_id"]),
            # The sequencer's queue: pending events in id order, however long the log.
            models.Index(fields=["id"], condition=models.Q(seq__isnull=True), name="common_audit_pending"),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.action}" if self.seq is not None else f"pending {self.action}"


class AuditChainHead(models.Model):
    """One row: the last integrated sequence number and hash. Locked only by the sequencer."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64)
    last_checkpoint_seq = models.BigIntegerField(default=0)
    last_checkpoint_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"head #{self.seq}"


class AuditCheckpoint(models.Model):
    """An Ed25519 signature over (seq, hash) of the chain at one point."""

    seq = models.BigIntegerField(unique=True)
    hash = models.CharField(max_length=64)
    signed_at = models.DateTimeField(default=timezone.now)
    key_id = models.CharField(max_length=32)
    signature = models.CharField(max_length=128)
    exported_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["seq"]

    def __str__(self) -> str:
        return f"checkpoint #{self.seq}"
