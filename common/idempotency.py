"""``Idempotency-Key`` for endpoints that create or spend (DESIGN.md "Money", docs/api.md).

Shared by every app (orders, payouts, training jobs, datasets, listings, ...; the table in
docs/api.md). A key is scoped to (organisation, endpoint) and kept 24 hours. The first
request with a key claims it in its own short transaction (an
``IdempotencyRecord`` in progress), then runs its service and stores its
response in the service's transaction, so the response is stored exactly
when the effect commits. Later requests with the key:

- the same body, first one done: the stored response again (a replay);
- the same body, first one still running: 409 ``idempotency.in_progress``;
- a different body: 422 ``idempotency.key_reused``.

A request that fails with a domain error releases the key (nothing was done,
so a corrected retry may use it). A request whose process died leaves the
key in progress until ``locked_until``; the next request then takes it over,
and the service's own uniqueness (one order per buyer and key) keeps the
effect single even so.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from common.exceptions import Conflict, Invalid
from common.models import IdempotencyRecord, IdempotencyState, Organisation


class IdempotencyInProgress(Conflict):
    """The first request with this Idempotency-Key is still being processed."""

    default_code = "idempotency.in_progress"
    title = "Request in progress"


class IdempotencyKeyMismatch(Invalid):
    """The Idempotency-Key was used with a different request body."""

    default_code = "idempotency.key_reused"
    title = "Idempotency key reused with another request"


class IdempotencyKeyInvalid(Invalid):
    """The Idempotency-Key header is missing or malformed."""

    default_code = "idempotency.key_invalid"
    title = "Invalid idempotency key"


KEY_PATTERN = re.compile(r"[A-Za-z0-9._:\-]{8,200}")
KEEP_FOR = timedelta(hours=24)


def _in_flight_for() -> timedelta:
    """How long a first request owns its key before a retry may take it over (it died)."""
    return timedelta(seconds=settings.MARKETPLACE_IDEMPOTENCY_IN_FLIGHT_SECONDS)


@dataclass(frozen=True)
class Replay:
    status: int
    body: Any


def request_hash(body: Any) -> str:
    """A stable digest of a JSON request body (key order does not matter)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def idempotency_key_check(key: str | None) -> str:
    """:raises IdempotencyKeyInvalid: the header is missing or not 8..200 URL-safe characters."""
    if not key:
        raise IdempotencyKeyInvalid(
            "This endpoint needs an Idempotency-Key header (a unique string per request).",
            code="idempotency.key_required",
            errors=[{"pointer": "/headers/Idempotency-Key", "code": "required", "detail": "Required."}],
        )
    if not KEY_PATTERN.fullmatch(key):
        raise IdempotencyKeyInvalid(
            "An Idempotency-Key is 8 to 200 characters: letters, digits, '.', '_', ':' or '-'.",
            errors=[{"pointer": "/headers/Idempotency-Key", "code": "invalid", "detail": "Malformed."}],
        )
    return key


def _claim(*, organisation: Organisation, endpoint: str, key: str, digest: str) -> Replay | IdempotencyRecord:
    now = timezone.now()
    fresh = {
        "request_hash": digest,
        "state": IdempotencyState.IN_PROGRESS,
        "locked_until": now + _in_flight_for(),
    }
    try:
        with transaction.atomic():
            return IdempotencyRecord.objects.create(
                organisation=organisation, endpoint=endpoint, key=key, created_at=now, **fresh
            )
    except IntegrityError:
        pass
    with transaction.atomic():
        record = IdempotencyRecord.objects.select_for_update().get(
            organisation=organisation, endpoint=endpoint, key=key
        )
        if record.created_at < now - KEEP_FOR:
            # Kept 24 hours: an older key is new again.
            for field, value in fresh.items():
                setattr(record, field, value)
            record.created_at, record.response_status, record.response_body = now, None, None
            record.save()
            return record
        if record.request_hash != digest:
            raise IdempotencyKeyMismatch(
                "This Idempotency-Key was used with a different request; use a new key.",
                errors=[{"pointer": "/headers/Idempotency-Key", "code": "reused", "detail": "Reused."}],
            )
        if record.state == IdempotencyState.DONE:
            return Replay(status=int(record.response_status or 200), body=record.response_body)
        if record.locked_until > now:
            raise IdempotencyInProgress(
                "A request with this Idempotency-Key is still in progress; retry shortly."
            )
        # The first request died while holding the key: take it over.
        record.locked_until = now + _in_flight_for()
        record.save(update_fields=["locked_until"])
        return record


def idempotent(
    *,
    organisation: Organisation,
    endpoint: str,
    key: str | None,
    body: Any,
    run: Callable[[str], tuple[int, Any]],
) -> Replay:
    """Run ``run(scoped_key)`` once per (organisation, endpoint, key); return (status, body) or the replay.

    ``run`` performs the effect and returns the response; it runs inside the
    transaction that also stores that response. ``scoped_key`` is the key
    plus when it was first seen, for the effect's own uniqueness.

    :raises IdempotencyKeyInvalid: missing or malformed key.
    :raises IdempotencyKeyMismatch: the key was used with another body.
    :raises IdempotencyInProgress: the first request with the key has not finished.
    """
    checked = idempotency_key_check(key)
    claimed = _claim(organisation=organisation, endpoint=endpoint, key=checked, digest=request_hash(body))
    if isinstance(claimed, Replay):
        return claimed
    # The effect's own key names this use of the key: after 24 hours the same key is a new request.
    scoped = f"{checked}@{claimed.created_at:%Y%m%dT%H%M%S%f}"
    try:
        with transaction.atomic():
            status, response = run(scoped)
            IdempotencyRecord.objects.filter(pk=claimed.pk).update(
                state=IdempotencyState.DONE, response_status=status, response_body=response
            )
    except BaseException:
        # Nothing was done (the effect rolled back with the record's update): free the key.
        IdempotencyRecord.objects.filter(pk=claimed.pk, state=IdempotencyState.IN_PROGRESS).delete()
        raise
    return Replay(status=status, body=response)


def idempotency_purge(*, now: Any = None) -> int:
    """Delete records older than 24 hours (the sweep); returns how many."""
    cutoff = (now or timezone.now()) - KEEP_FOR
    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=cutoff).delete()
    return deleted
