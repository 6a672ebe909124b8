"""Webhooks through a real Celery worker process and a real HTTP receiver: sent after commit, retried."""

from __future__ import annotations

import hashlib
import hmac
from typing import cast

import pytest
from django.db import transaction

from common.models import DeliveryState, Organisation, User, WebhookDelivery
from common.notifications import notify_event
from common.processes import wait_until
from common.webhooks import webhook_endpoint_create, webhook_retry_sweep
from tests.common.webhook_receiver import webhook_receiver
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory

pytestmark = pytest.mark.worker


def test_the_worker_delivers_after_commit_and_retries_a_500(celery_worker_process):
    org = cast(Organisation, OrganisationFactory(name="Acme Corpora", is_provider=True))
    admin = cast(User, UserFactory(username="alice"))
    MembershipFactory(user=admin, organisation=org, role="admin")
    with webhook_receiver(statuses=[500]) as receiver:
        endpoint, secret = webhook_endpoint_create(actor=admin, organisation=org, url=receiver.url)
        with transaction.atomic():
            notify_event(organisation=org, kind="order.paid", subject="Order 1 paid", payload={"order_id": 1})
        delivery = wait_until(
            lambda: WebhookDelivery.objects.filter(endpoint=endpoint, attempts=1).first(),
            what="the first attempt",
        )
        assert delivery is not None
        assert (delivery.state, delivery.last_status) == (DeliveryState.PENDING, 500)
        assert delivery.next_attempt_at is not None
        # The beat sweep, run as if the backoff had passed.
        assert webhook_retry_sweep(now=delivery.next_attempt_at) == [delivery.pk]
        wait_until(
            lambda: WebhookDelivery.objects.filter(pk=delivery.pk, state=DeliveryState.DELIVERED).exists(),
            what="the retry to deliver",
        )
    assert len(receiver.received) == 2
    for request in receiver.received:
        signed = request.headers["Sealroom-Timestamp"].encode() + b"." + request.body
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        assert request.headers["Sealroom-Signature"] == f"v1={expected}"
