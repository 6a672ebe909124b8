"""Signed webhooks: endpoints an organisation registers, and the deliveries made to them.

Each delivery POSTs one event as JSON with these headers (docs/webhooks.md)::

    Sealroom-Event: order.paid
    Sealroom-Delivery: <event id, a UUID; the receiver's idempotency key>
    Sealroom-Timestamp: <Unix seconds>
    Sealroom-Signature: v1=<hex HMAC-SHA256 of "<timestamp>.<body>" under the endpoint's secret>

A 2xx answer delivers it; anything else (a redirect included: they are not
followed) is retried with exponential backoff up to ``WEBHOOK_MAX_ATTEMPTS``.
The POST goes through urllib3 to the addresses that passed the destination
check (see :func:`destination_problem`), never to a second DNS answer.
Every attempt is a leased work item (:mod:`common.work`) named
``<delivery id>:<attempt>``, so an attempt runs at most once to completion
and the delivery row holds the log; the retry sweep (Celery beat) enqueues
the next attempt when it is due. A receiver may still see an event twice (a
worker can die after the POST and before recording it): it deduplicates by
``Sealroom-Delivery``.

The endpoint's secret is stored as generated, because signing needs it, and
is returned only once, by :func:`webhook_endpoint_create`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import secrets
import socket
import time
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import SplitResult, urlsplit

import certifi
import urllib3
from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from common.audit import audit_record
from common.exceptions import FieldError, Invalid, NotFound
from common.models import (
    DeliveryState,
    Organisation,
    User,
    WebhookDelivery,
    WebhookEndpoint,
    WorkItem,
)
from common.work import work_enqueue, work_handler

logger = logging.getLogger(__name__)

WORK_KIND = "common.webhook_deliver"
SECRET_PREFIX = "whsec_"  # noqa: S105 - a prefix, not a secret
SIGNATURE_VERSION = "v1"
MAX_BACKOFF_SECONDS = 6 * 3600
MAX_ENDPOINTS_PER_ORG = 20
_ERROR_LIMIT = 500
_SWEEP_BATCH = 500
_USER_AGENT = "Sealroom-Webhooks/1"


# --- Signing -------------------------------------------------------------------------------


def webhook_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    """The ``Sealroom-Signature`` header value: ``v1=`` and the hex HMAC-SHA256 of ``timestamp.body``."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"{SIGNATURE_VERSION}={mac.hexdigest()}"


def webhook_signature_valid(
    *, secret: str, timestamp: str, body: bytes, signature: str, tolerance_seconds: int = 300
) -> bool:
    """Whether ``signature`` signs ``timestamp.body`` and the timestamp is recent enough (receivers)."""
    try:
        age = abs(time.time() - int(timestamp))
    except ValueError:
        return False
    expected = webhook_signature(secret=secret, timestamp=timestamp, body=body)
    return age <= tolerance_seconds and hmac.compare_digest(expected, signature)


# --- Destination checks ------------------------------------------------------------------------


def _address_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class _Unresolvable(Exception):
    """The host does not resolve now (may be temporary: the attempt is retried)."""


def _url_problem(parts: SplitResult) -> str | None:
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "The URL has an invalid port."
    if parts.scheme not in ("http", "https"):
        return "Use an http or https URL."
    if not parts.hostname:
        return "The URL needs a host."
    if parts.username or parts.password:
        return "Leave credentials out of the URL; verify the signature instead."
    return None


def _default_port(parts: SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


def _addresses(parts: SplitResult) -> list[str]:
    """The addresses the URL's host resolves to now. :raises _Unresolvable: it does not resolve."""
    try:
        infos = socket.getaddrinfo(parts.hostname, _default_port(parts), type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise _Unresolvable(f"The host {parts.hostname!r} does not resolve.") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise _Unresolvable(f"The host {parts.hostname!r} does not resolve.")
    return addresses


def _addresses_problem(parts: SplitResult, addresses: list[str]) -> str | None:
    if settings.WEBHOOK_ALLOW_PRIVATE or all(_address_allowed(address) for address in addresses):
        return None
    return f"The host {parts.hostname!r} resolves to a private, loopback or reserved address."


def destination_problem(url: str) -> str | None:
    """Why Sealroom must not POST to ``url``, or None when it may.

    Only http(s) URLs with a host and no credentials; unless
    ``WEBHOOK_ALLOW_PRIVATE``, every address the host resolves to must be
    public (no loopback, private, link-local, shared or reserved ranges), so
    a webhook cannot reach into the platform's own network. Deliveries check
    again and connect to the very addresses they checked (no second lookup
    that a rebinding DNS server could answer differently).
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return "The URL cannot be parsed."
    problem = _url_problem(parts)
    if problem or settings.WEBHOOK_ALLOW_PRIVATE:
        return problem
    try:
        return _addresses_problem(parts, _addresses(parts))
    except _Unresolvable as exc:
        return str(exc)


def url_for_log(url: str) -> str:
    """``url`` without its query and fragment, which may carry a receiver's own tokens (for the audit log)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    return parts._replace(query="", fragment="").geturl()


# --- Endpoints ---------------------------------------------------------------------------------


def _kinds_clean(event_kinds: list[str]) -> tuple[list[str], list[FieldError]]:
    errors: list[FieldError] = []
    cleaned: list[str] = []
    for index, raw in enumerate(event_kinds):
        kind = raw.strip() if isinstance(raw, str) else ""
        parts = kind.removesuffix(".*").split(".")
        if not kind or len(kind) > 80 or not all(p.replace("_", "").isalnum() for p in parts):
            errors.append(
                {
                    "pointer": f"/event_kinds/{index}",
                    "code": "invalid",
                    "detail": "An event kind is dotted words ('order.paid') or a family ('order.*').",
                }
            )
        elif kind not in cleaned:
            cleaned.append(kind)
    return cleaned, errors


@transaction.atomic
def webhook_endpoint_create(
    *,
    actor: User,
    organisation: Organisation,
    url: str,
    event_kinds: list[str] | None = None,
    description: str = "",
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; returns it and its signing secret, which is never returned again.

    The caller has checked that ``actor`` is an admin of ``organisation``.

    :raises Invalid: the URL is refused, an event kind is malformed, or the
        organisation has too many endpoints.
    """
    url = url.strip()
    errors: list[FieldError] = []
    problem = destination_problem(url) if len(url) <= 500 else "The URL is longer than 500 characters."
    if problem:
        errors.append({"pointer": "/url", "code": "invalid", "detail": problem})
    kinds, kind_errors = _kinds_clean(event_kinds or [])
    errors.extend(kind_errors)
    if len(description) > 200:
        errors.append({"pointer": "/description", "code": "max_length", "detail": "At most 200 characters."})
    if errors:
        raise Invalid(errors[0]["detail"], code="common.webhook_invalid", errors=errors)
    if WebhookEndpoint.objects.filter(organisation=organisation).count() >= MAX_ENDPOINTS_PER_ORG:
        raise Invalid(
            f"An organisation may have at most {MAX_ENDPOINTS_PER_ORG} webhook endpoints; delete one first.",
            code="common.webhook_limit",
        )
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    endpoint = WebhookEndpoint.objects.create(
        organisation=organisation,
        url=url,
        description=description.strip(),
        secret=secret,
        event_kinds=kinds,
        created_by=actor,
    )
    audit_record(
        action="webhook.create",
        actor=actor,
        organisation=organisation,
        object_type="webhook_endpoint",
        object_id=endpoint.pk,
        details={"url": url_for_log(url), "event_kinds": kinds},
    )
    return endpoint, secret


def _fail_pending(endpoint: WebhookEndpoint, reason: str) -> int:
    return WebhookDelivery.objects.filter(endpoint=endpoint, state=DeliveryState.PENDING).update(
        state=DeliveryState.FAILED, next_attempt_at=None, last_error=reason
    )


@transaction.atomic
def webhook_endpoint_set_active(*, actor: User, endpoint: WebhookEndpoint, active: bool) -> WebhookEndpoint:
    """Enable or disable an endpoint (idempotent); disabling fails its pending deliveries."""
    locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    if locked.active == active:
        return locked
    locked.active = active
    locked.disabled_at = None if active else timezone.now()
    locked.save(update_fields=["active", "disabled_at"])
    cancelled = 0 if active else _fail_pending(locked, "endpoint disabled")
    audit_record(
        action="webhook.enable" if active else "webhook.disable",
        actor=actor,
        organisation=locked.organisation,
        object_type="webhook_endpoint",
        object_id=locked.pk,
        details={"url": url_for_log(locked.url), "pending_cancelled": cancelled},
    )
    return locked


@transaction.atomic
def webhook_endpoint_delete(*, actor: User, endpoint: WebhookEndpoint) -> None:
    """Delete an endpoint and its delivery log; its pending deliveries are never sent."""
    audit_record(
        action="webhook.delete",
        actor=actor,
        organisation=endpoint.organisation,
        object_type="webhook_endpoint",
        object_id=endpoint.pk,
        details={"url": url_for_log(endpoint.url)},
    )
    endpoint.delete()


def webhook_endpoint_list(*, organisation: Organisation) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(organisation=organisation).order_by("pk")


def webhook_endpoint_get(*, organisation: Organisation, endpoint_id: int) -> WebhookEndpoint:
    """:raises NotFound: no such endpoint in this organisation."""
    endpoint = WebhookEndpoint.objects.filter(organisation=organisation, pk=endpoint_id).first()
    if endpoint is None:
        raise NotFound("No such webhook endpoint.", code="common.webhook_not_found")
    return endpoint


def webhook_delivery_list(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    return WebhookDelivery.objects.filter(endpoint=endpoint).order_by("-created_at", "-pk")


# --- Deliveries --------------------------------------------------------------------------------


def webhook_deliveries_create(*, organisation: Organisation, kind: str, envelope: dict[str, Any]) -> int:
    """Create one pending delivery per active endpoint that wants ``kind``; enqueue each after commit.

    Runs in the caller's transaction: if it rolls back, nothing is sent.
    Returns how many deliveries were created.
    """
    endpoints = [
        e for e in WebhookEndpoint.objects.filter(organisation=organisation, active=True) if e.wants(kind)
    ]
    now = timezone.now()
    for endpoint in endpoints:
        delivery = WebhookDelivery.objects.create(
            endpoint=endpoint,
            event_id=envelope["id"],
            kind=kind,
            payload=envelope,
            next_attempt_at=now,
        )
        work_enqueue(kind=WORK_KIND, ref=f"{delivery.pk}:1", max_attempts=settings.WORK_MAX_ATTEMPTS)
    return len(endpoints)


def backoff_seconds(attempt: int) -> int:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): base x 2^(attempt-1), capped."""
    return int(min(settings.WEBHOOK_BACKOFF_SECONDS * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS))


def _encode(envelope: dict[str, Any]) -> bytes:
    return json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _ca_bundle() -> str:
    return settings.WEBHOOK_CA_BUNDLE or certifi.where()


def _pool(parts: SplitResult, address: str) -> urllib3.HTTPConnectionPool:
    """A one-connection pool to ``address``, speaking to the URL's host (Host header, TLS name)."""
    timeout = urllib3.Timeout(connect=settings.WEBHOOK_TIMEOUT_SECONDS, read=settings.WEBHOOK_TIMEOUT_SECONDS)
    port = _default_port(parts)
    if parts.scheme == "https":
        return urllib3.HTTPSConnectionPool(
            address,
            port,
            timeout=timeout,
            maxsize=1,
            retries=False,
            cert_reqs="CERT_REQUIRED",
            ca_certs=_ca_bundle(),
            server_hostname=parts.hostname,
            assert_hostname=parts.hostname,
        )
    return urllib3.HTTPConnectionPool(address, port, timeout=timeout, maxsize=1, retries=False)


def _send(
    parts: SplitResult, addresses: list[str], body: bytes, headers: dict[str, str]
) -> tuple[int | None, str]:
    """POST to the first of ``addresses`` that accepts a connection; the status, or an error text."""
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = {**headers, "Host": parts.netloc}
    error = "could not connect"
    for address in addresses:
        pool = _pool(parts, address)
        try:
            # No redirects, no retries here (the delivery retries), and the body is not read.
            response = pool.urlopen(
                "POST",
                target,
                body=body,
                headers=headers,
                redirect=False,
                retries=False,
                preload_content=False,
            )
            response.release_conn()
            return response.status, ""
        except urllib3.exceptions.NewConnectionError:
            continue
        except urllib3.exceptions.SSLError:
            return (
                None,
                f"TLS failed: the certificate is not valid for {parts.hostname}, or the handshake broke",
            )
        except urllib3.exceptions.TimeoutError:
            error = f"no answer within {settings.WEBHOOK_TIMEOUT_SECONDS} s"
        except urllib3.exceptions.HTTPError:
            error = "the connection broke before an answer"
        finally:
            pool.close()
        return None, error
    return None, error


def _post(delivery: WebhookDelivery) -> tuple[int | None, str]:
    """POST the delivery once; returns the HTTP status (None when no answer) and an error text.

    An error starting with ``refused:`` fails the delivery for good.
    """
    endpoint = delivery.endpoint
    parts = urlsplit(endpoint.url)
    problem = _url_problem(parts)
    if problem:
        return None, f"refused: {problem}"
    try:
        addresses = _addresses(parts)
    except _Unresolvable as exc:
        return None, str(exc)
    problem = _addresses_problem(parts, addresses)
    if problem:
        return None, f"refused: {problem}"
    body = _encode(delivery.payload)
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": _USER_AGENT,
        "Sealroom-Event": delivery.kind,
        "Sealroom-Delivery": str(delivery.event_id),
        "Sealroom-Timestamp": timestamp,
        "Sealroom-Signature": webhook_signature(secret=endpoint.secret, timestamp=timestamp, body=body),
    }
    status, error = _send(parts, addresses, body, headers)
    if error or status is None:
        return None, error
    if 200 <= status < 300:
        return status, ""
    return status, f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")


@transaction.atomic
def _record_attempt(
    *, delivery_id: int, attempt: int, status: int | None, error: str
) -> WebhookDelivery | None:
    delivery = WebhookDelivery.objects.select_for_update().filter(pk=delivery_id).first()
    if delivery is None or delivery.state != DeliveryState.PENDING or delivery.attempts >= attempt:
        return delivery
    now = timezone.now()
    delivery.attempts = attempt
    delivery.last_attempt_at = now
    delivery.last_status = status
    delivery.last_error = error[:_ERROR_LIMIT]
    if not error:
        delivery.state = DeliveryState.DELIVERED
        delivery.delivered_at = now
        delivery.next_attempt_at = None
    elif attempt >= settings.WEBHOOK_MAX_ATTEMPTS or error.startswith("refused:"):
        delivery.state = DeliveryState.FAILED
        delivery.next_attempt_at = None
    else:
        delivery.next_attempt_at = now + timedelta(seconds=backoff_seconds(attempt))
    delivery.save()
    return delivery


def webhook_attempt(*, delivery_id: int, attempt: int) -> WebhookDelivery | None:
    """Make attempt number ``attempt`` of a delivery, unless it was made or the delivery is settled.

    Returns the delivery as recorded (None when it was deleted). Never raises
    for the receiver's failures: they are recorded and retried later.
    """
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None or delivery.state != DeliveryState.PENDING or delivery.attempts >= attempt:
        return delivery
    if not delivery.endpoint.active:
        status, error = None, "refused: endpoint disabled"
    else:
        status, error = _post(delivery)
    recorded = _record_attempt(delivery_id=delivery_id, attempt=attempt, status=status, error=error)
    if error:
        logger.info("webhook delivery %s attempt %s: %s", delivery.event_id, attempt, error)
    return recorded


@work_handler(WORK_KIND)
def _deliver(item: WorkItem) -> None:
    delivery_id, _, attempt = item.ref.partition(":")
    webhook_attempt(delivery_id=int(delivery_id), attempt=int(attempt))


def webhook_retry_sweep(now: datetime | None = None) -> list[int]:
    """Enqueue the next attempt of every pending delivery whose retry is due; returns their ids.

    Safe to run concurrently and repeatedly: an attempt is one work item per
    ``(delivery, attempt number)``, created once.
    """
    now = now or timezone.now()
    due = WebhookDelivery.objects.filter(
        state=DeliveryState.PENDING, attempts__gte=1, next_attempt_at__lte=now
    ).order_by("next_attempt_at")[:_SWEEP_BATCH]
    enqueued: list[int] = []
    for delivery_id, attempts in due.values_list("pk", "attempts"):
        ref = f"{delivery_id}:{attempts + 1}"
        if not WorkItem.objects.filter(kind=WORK_KIND, ref=ref).exists():
            work_enqueue(kind=WORK_KIND, ref=ref)
            enqueued.append(delivery_id)
    return enqueued
