"""Append to the hash-chained audit log (DESIGN.md "Audit log").

``audit_record`` locks the chain head inside the caller's transaction, so an
audited action and its event commit together or not at all, and two writers
can never fork the chain.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from common.exceptions import Invalid
from common.models import AuditChainHead, AuditEvent, Organisation, User

GENESIS_HASH = "0" * 64


def audit_reason(reason: str, *, code: str) -> str:
    """The reason an operator gives for an action, stripped and cut to 300 characters.

    :raises Invalid: it is blank (field error at ``/reason``, problem code ``code``).
    """
    cleaned = reason.strip()
    if not cleaned:
        raise Invalid(
            "Give a reason: it goes into the audit log.",
            code=code,
            errors=[{"pointer": "/reason", "code": "required", "detail": "Give a reason."}],
        )
    return cleaned[:300]


def format_instant(at: datetime) -> str:
    """An instant as the hashed and signed bytes spell it: UTC, microseconds, ``Z``."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_event(
    *,
    seq: int,
    at: datetime,
    actor_id: int | None,
    actor_name: str,
    organisation_id: int | None,
    organisation_name: str,
    action: str,
    object_type: str,
    object_id: str,
    details: dict[str, Any],
    prev_hash: str,
) -> bytes:
    """The exact bytes an event's hash covers (sorted keys, no whitespace, UTC microseconds)."""
    body = {
        "seq": seq,
        "at": format_instant(at),
        "actor_id": actor_id,
        "actor_name": actor_name,
        "organisation_id": organisation_id,
        "organisation_name": organisation_name,
        "action": action,
        "object_type": object_type,
        "object_id": object_id,
        "details": details,
        "prev_hash": prev_hash,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def event_hash(event: AuditEvent) -> str:
    """The SHA-256 (hex) of the event's canonical bytes, as stored in ``AuditEvent.hash``."""
    return hashlib.sha256(
        canonical_event(
            seq=event.seq,
            at=event.at,
            actor_id=event.actor_id,
            actor_name=event.actor_name,
            organisation_id=event.organisation_id,
            organisation_name=event.organisation_name,
            action=event.action,
            object_type=event.object_type,
            object_id=event.object_id,
            details=event.details,
            prev_hash=event.prev_hash,
        )
    ).hexdigest()


def chain_head_lock() -> AuditChainHead:
    """The chain head, created if missing and locked until the caller's transaction ends."""
    head = AuditChainHead.objects.select_for_update().filter(pk=1).first()
    if head is None:
        AuditChainHead.objects.get_or_create(pk=1, defaults={"hash": GENESIS_HASH})
        head = AuditChainHead.objects.select_for_update().get(pk=1)
    return head


def audit_record(
    *,
    action: str,
    actor: User | None = None,
    actor_name: str = "",
    organisation: Organisation | None = None,
    object_type: str = "",
    object_id: object = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one event to the chain, in the caller's transaction.

    ``details`` must be JSON-serialisable and must never hold custody records.
    """
    # Round-trip the details through JSON now, so the hash covers exactly what
    # the database will return later (tuples become lists, and so on).
    clean_details = json.loads(json.dumps(details or {}, sort_keys=True, default=str))
    # No savepoint: if the append fails, the caller's whole transaction must
    # roll back, so an action can never commit without its event.
    with transaction.atomic(savepoint=False):
        head = chain_head_lock()
        # Microsecond precision: what every backend stores without rounding.
        at = timezone.now()
        event = AuditEvent(
            seq=head.seq + 1,
            at=at,
            actor_id=actor.pk if actor is not None else None,
            actor_name=actor_name or (actor.get_username() if actor is not None else "system"),
            organisation_id=organisation.pk if organisation is not None else None,
            organisation_name=organisation.name if organisation is not None else "",
            action=action,
            object_type=object_type,
            object_id=str(object_id) if object_id != "" else "",
            details=clean_details,
            prev_hash=head.hash,
        )
        event.hash = event_hash(event)
        event.save(force_insert=True)
        head.seq = event.seq
        head.hash = event.hash
        head.save(update_fields=["seq", "hash"])
        _after_append(head)
    return event


def _after_append(head: AuditChainHead) -> None:
    """Hook for checkpointing: every AUDIT_CHECKPOINT_EVERY events a checkpoint is signed."""
    from common.audit_checkpoints import checkpoint_if_due

    checkpoint_if_due(head)
