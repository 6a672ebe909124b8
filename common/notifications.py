"""Tell an organisation that something happened: a portal notification and its signed webhooks.

Domain services call :func:`notify_event` inside their own transaction, next
to the change it reports, so the notification and the webhook deliveries
commit with it or not at all; deliveries are sent after commit
(:mod:`common.webhooks`). Payloads carry ids, states and amounts: never
custody records, never secrets.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from common.exceptions import NotFound
from common.models import Notification, Organisation
from common.webhooks import webhook_deliveries_create

_KIND = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
# A payload is a summary for machines, not a document.
MAX_PAYLOAD_BYTES = 16 * 1024


def _payload_clean(payload: dict[str, Any]) -> dict[str, Any]:
    try:
        encoded = json.dumps(payload, sort_keys=True, default=str, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"notification payload is not JSON-serialisable: {exc}") from None
    if len(encoded.encode()) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"notification payload exceeds {MAX_PAYLOAD_BYTES} bytes")
    cleaned: dict[str, Any] = json.loads(encoded)
    return cleaned


@transaction.atomic
def notify_event(
    *,
    organisation: Organisation,
    kind: str,
    subject: str,
    payload: dict[str, Any],
    object_type: str = "",
    object_id: str | int = "",
) -> None:
    """Store a notification for ``organisation`` and queue its webhooks, in the caller's transaction.

    ``kind`` is dotted lower-case ("order.paid", "license.revoked");
    ``payload`` is a small JSON object that must never contain record text.
    One webhook delivery is created per active endpoint whose filter wants
    ``kind``; each is sent after commit, signed, and retried with backoff.

    :raises ValueError: malformed ``kind``, or a payload that is not JSON or too large
        (a programming error in the caller, not user input).
    """
    if not _KIND.match(kind) or len(kind) > 80:
        raise ValueError(f"notification kind must be dotted lower-case words, got {kind!r}")
    data = _payload_clean(payload)
    notification = Notification.objects.create(
        organisation=organisation,
        kind=kind,
        subject=subject[:200],
        payload=data,
        object_type=object_type[:80],
        object_id=str(object_id)[:80],
    )
    envelope = {
        "id": str(notification.event_id),
        "kind": kind,
        "created_at": notification.created_at.isoformat(),
        "organisation_id": organisation.public_id,
        "subject": notification.subject,
        "object": {"type": notification.object_type, "id": notification.object_id},
        "data": data,
    }
    webhook_deliveries_create(organisation=organisation, kind=kind, envelope=envelope)


def notification_list(*, organisation: Organisation, unread_only: bool = False) -> QuerySet[Notification]:
    notifications = Notification.objects.filter(organisation=organisation)
    if unread_only:
        notifications = notifications.filter(read_at__isnull=True)
    return notifications.order_by("-created_at", "-pk")


def notification_unread_count(*, organisation: Organisation) -> int:
    return Notification.objects.filter(organisation=organisation, read_at__isnull=True).count()


def notification_get(*, organisation: Organisation, notification_id: int) -> Notification:
    """:raises NotFound: no such notification in this organisation."""
    notification = Notification.objects.filter(organisation=organisation, pk=notification_id).first()
    if notification is None:
        raise NotFound("No such notification.", code="common.notification_not_found")
    return notification


def notifications_mark_read(*, organisation: Organisation, ids: list[int] | None = None) -> int:
    """Mark the given notifications (all unread ones when ``ids`` is None) read; returns how many changed.

    Ids of other organisations' notifications are ignored.
    """
    unread = Notification.objects.filter(organisation=organisation, read_at__isnull=True)
    if ids is not None:
        unread = unread.filter(pk__in=ids)
    return unread.update(read_at=timezone.now())
