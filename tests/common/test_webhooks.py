"""Signed webhooks against a real HTTP receiver on 127.0.0.1: signatures, retries, rollbacks, refusals."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from common.exceptions import Invalid
from common.models import AuditEvent, DeliveryState, Notification, WebhookDelivery, WebhookEndpoint, WorkItem
from common.notifications import notify_event
from common.webhooks import (
    WORK_KIND,
    backoff_seconds,
    destination_problem,
    webhook_endpoint_create,
    webhook_endpoint_set_active,
    webhook_retry_sweep,
    webhook_signature_valid,
)
from common.work import work_run
from tests.common.webhook_receiver import self_signed_certificate, webhook_receiver

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _webhook_settings(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True
    settings.WEBHOOK_BACKOFF_SECONDS = 30
    settings.WEBHOOK_MAX_ATTEMPTS = 3
    settings.WEBHOOK_TIMEOUT_SECONDS = 5


def run_due_attempts() -> list[str]:
    """Run every queued webhook work item once, as a worker would; returns their outcomes."""
    items = WorkItem.objects.filter(kind=WORK_KIND, state="queued").order_by("pk")
    return [work_run(item_id=item.pk, owner="test-worker") for item in items]


def endpoint_for(alice, acme, url, kinds=None):
    endpoint, secret = webhook_endpoint_create(actor=alice, organisation=acme, url=url, event_kinds=kinds)
    return endpoint, secret


def paid(acme, order_id: int = 7) -> None:
    notify_event(
        organisation=acme,
        kind="order.paid",
        subject=f"Order {order_id} paid",
        payload={"order_id": order_id, "amount": 1250, "currency": "EUR"},
        object_type="order",
        object_id=order_id,
    )


def receiver_verifies(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What docs/webhooks.md tells a receiver to do, with hmac alone."""
    timestamp = headers["Sealroom-Timestamp"]
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    given = headers["Sealroom-Signature"].removeprefix("v1=")
    return hmac.compare_digest(expected, given) and abs(time.time() - int(timestamp)) < 300


class TestDelivery:
    def test_posts_a_signed_event_that_the_receiver_verifies(
        self, alice, acme, django_capture_on_commit_callbacks
    ):
        with webhook_receiver() as receiver:
            endpoint, secret = endpoint_for(alice, acme, receiver.url)
            with django_capture_on_commit_callbacks() as callbacks:
                paid(acme)
            assert len(callbacks) == 1  # the doorbell, after commit
            assert run_due_attempts() == ["done"]
        assert len(receiver.received) == 1
        request = receiver.received[0]
        assert request.path == "/hooks"
        assert receiver_verifies(secret, request.headers, request.body)
        assert not receiver_verifies("whsec_wrong", request.headers, request.body)
        assert not receiver_verifies(secret, request.headers, request.body + b" ")
        body = json.loads(request.body)
        notification = Notification.objects.get(organisation=acme)
        assert body == {
            "id": str(notification.event_id),
            "kind": "order.paid",
            "created_at": notification.created_at.isoformat(),
            "organisation_id": acme.public_id,
            "subject": "Order 7 paid",
            "object": {"type": "order", "id": "7"},
            "data": {"order_id": 7, "amount": 1250, "currency": "EUR"},
        }
        assert request.headers["Sealroom-Event"] == "order.paid"
        assert request.headers["Sealroom-Delivery"] == str(notification.event_id)
        assert request.headers["Content-Type"] == "application/json"
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        assert (delivery.state, delivery.attempts, delivery.last_status) == ("delivered", 1, 200)
        assert delivery.delivered_at is not None and delivery.next_attempt_at is None

    def test_the_helper_check_agrees_with_a_plain_hmac_receiver(self, alice, acme):
        with webhook_receiver() as receiver:
            _endpoint, secret = endpoint_for(alice, acme, receiver.url)
            paid(acme)
            run_due_attempts()
        request = receiver.received[0]
        assert webhook_signature_valid(
            secret=secret,
            timestamp=request.headers["Sealroom-Timestamp"],
            body=request.body,
            signature=request.headers["Sealroom-Signature"],
        )
        stale = str(int(request.headers["Sealroom-Timestamp"]) - 3600)
        assert not webhook_signature_valid(
            secret=secret, timestamp=stale, body=request.body, signature=request.headers["Sealroom-Signature"]
        )

    def test_retries_with_backoff_after_a_500_then_delivers(self, alice, acme):
        with webhook_receiver(statuses=[500]) as receiver:
            endpoint, _secret = endpoint_for(alice, acme, receiver.url)
            paid(acme)
            before = timezone.now()
            assert run_due_attempts() == ["done"]
            delivery = WebhookDelivery.objects.get(endpoint=endpoint)
            assert (delivery.state, delivery.attempts, delivery.last_status) == ("pending", 1, 500)
            assert delivery.last_error == "HTTP 500"
            # The first retry waits WEBHOOK_BACKOFF_SECONDS.
            assert delivery.next_attempt_at is not None
            assert (
                before + timedelta(seconds=29)
                < delivery.next_attempt_at
                < timezone.now() + timedelta(seconds=31)
            )
            assert webhook_retry_sweep(now=timezone.now()) == []
            assert run_due_attempts() == []
            assert webhook_retry_sweep(now=delivery.next_attempt_at) == [delivery.pk]
            # Sweeping again before the attempt runs enqueues nothing twice.
            assert webhook_retry_sweep(now=delivery.next_attempt_at) == []
            assert run_due_attempts() == ["done"]
        delivery.refresh_from_db()
        assert (delivery.state, delivery.attempts, delivery.last_status, delivery.last_error) == (
            "delivered",
            2,
            200,
            "",
        )
        assert len(receiver.received) == 2
        # Both attempts carry the same delivery id, so the receiver can deduplicate.
        assert (
            receiver.received[0].headers["Sealroom-Delivery"]
            == receiver.received[1].headers["Sealroom-Delivery"]
        )

    def test_backoff_doubles_and_is_capped(self, settings):
        settings.WEBHOOK_BACKOFF_SECONDS = 30
        assert [backoff_seconds(n) for n in (1, 2, 3, 4)] == [30, 60, 120, 240]
        assert backoff_seconds(30) == 6 * 3600

    def test_fails_after_the_last_attempt(self, alice, acme):
        with webhook_receiver(statuses=[500, 503, 502]) as receiver:
            endpoint, _secret = endpoint_for(alice, acme, receiver.url)
            paid(acme)
            for _ in range(3):
                run_due_attempts()
                delivery = WebhookDelivery.objects.get(endpoint=endpoint)
                if delivery.next_attempt_at:
                    webhook_retry_sweep(now=delivery.next_attempt_at)
        delivery.refresh_from_db()
        assert (delivery.state, delivery.attempts, delivery.last_status) == ("failed", 3, 502)
        assert delivery.next_attempt_at is None
        assert webhook_retry_sweep(now=timezone.now() + timedelta(days=1)) == []
        assert len(receiver.received) == 3

    def test_does_not_follow_redirects(self, alice, acme):
        with webhook_receiver(statuses=[302]) as receiver:
            endpoint, _secret = endpoint_for(alice, acme, receiver.url)
            paid(acme)
            run_due_attempts()
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        assert (delivery.state, delivery.last_status) == ("pending", 302)
        assert "redirects are not followed" in delivery.last_error
        assert [r.path for r in receiver.received] == ["/hooks"]

    def test_records_a_refused_connection_and_retries(self, alice, acme):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]  # nothing listens on it once closed
        endpoint, _secret = endpoint_for(alice, acme, f"http://127.0.0.1:{port}/x")
        paid(acme)
        run_due_attempts()
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        assert (delivery.state, delivery.attempts, delivery.last_status) == ("pending", 1, None)
        assert delivery.last_error == "could not connect"

    def test_speaks_https_to_the_named_host_and_checks_its_certificate(self, alice, acme, settings, tmp_path):
        cert, key = self_signed_certificate(tmp_path, "localhost")
        settings.WEBHOOK_CA_BUNDLE = str(cert)
        with webhook_receiver(tls=(cert, key), host="localhost") as receiver:
            endpoint, secret = endpoint_for(alice, acme, receiver.url + "?source=sealroom")
            paid(acme)
            run_due_attempts()
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        assert (delivery.state, delivery.last_status) == ("delivered", 200)
        request = receiver.received[0]
        assert request.path == "/hooks?source=sealroom"
        assert request.headers["Host"] == receiver.url.split("/")[2]
        assert receiver_verifies(secret, request.headers, request.body)

    def test_refuses_a_certificate_it_does_not_trust(self, alice, acme, tmp_path):
        cert, key = self_signed_certificate(tmp_path, "localhost")
        with webhook_receiver(tls=(cert, key), host="localhost") as receiver:
            endpoint, _ = endpoint_for(alice, acme, receiver.url)
            paid(acme)
            run_due_attempts()
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        assert (delivery.state, delivery.attempts, delivery.last_status) == ("pending", 1, None)
        assert delivery.last_error.startswith("TLS failed")
        assert receiver.received == []

    def test_an_unresolvable_host_is_retried_not_failed(self, alice, acme):
        endpoint, _ = endpoint_for(alice, acme, "http://receiver.invalid/hooks")
        paid(acme)
        run_due_attempts()
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        assert (delivery.state, delivery.attempts) == ("pending", 1)
        assert delivery.last_error == "The host 'receiver.invalid' does not resolve."

    def test_an_attempt_run_twice_posts_once(self, alice, acme):
        with webhook_receiver(statuses=[500]) as receiver:
            endpoint, _secret = endpoint_for(alice, acme, receiver.url)
            paid(acme)
            item = WorkItem.objects.get(kind=WORK_KIND)
            assert work_run(item_id=item.pk, owner="w1") == "done"
            WorkItem.objects.filter(pk=item.pk).update(state="queued")  # a duplicate doorbell after a crash
            assert work_run(item_id=item.pk, owner="w2") == "done"
        assert len(receiver.received) == 1
        assert WebhookDelivery.objects.get(endpoint=endpoint).attempts == 1


class TestTransactions:
    def test_nothing_is_stored_or_sent_when_the_caller_rolls_back(
        self, alice, acme, django_capture_on_commit_callbacks
    ):
        with webhook_receiver() as receiver:
            endpoint_for(alice, acme, receiver.url)
            with (
                django_capture_on_commit_callbacks(execute=True) as callbacks,
                pytest.raises(RuntimeError),
                transaction.atomic(),
            ):
                paid(acme)
                raise RuntimeError("the order failed after notifying")
            assert callbacks == []
            assert run_due_attempts() == []
        assert receiver.received == []
        assert not Notification.objects.exists()
        assert not WebhookDelivery.objects.exists()
        assert not WorkItem.objects.filter(kind=WORK_KIND).exists()


class TestFilters:
    def test_sends_only_the_kinds_an_endpoint_wants_and_only_to_active_ones(self, alice, acme, bob, bolt):
        orders, _ = endpoint_for(alice, acme, "http://127.0.0.1:9/orders", ["order.*"])
        jobs, _ = endpoint_for(alice, acme, "http://127.0.0.1:9/jobs", ["job.succeeded"])
        everything, _ = endpoint_for(alice, acme, "http://127.0.0.1:9/all")
        off, _ = endpoint_for(alice, acme, "http://127.0.0.1:9/off")
        webhook_endpoint_set_active(actor=alice, endpoint=off, active=False)
        other_org, _ = endpoint_for(bob, bolt, "http://127.0.0.1:9/bolt")
        paid(acme)
        notify_event(organisation=acme, kind="job.failed", subject="Job 3 failed", payload={"job_id": 3})
        sent = sorted(WebhookDelivery.objects.values_list("endpoint_id", "kind"))
        assert sent == sorted(
            [(orders.pk, "order.paid"), (everything.pk, "order.paid"), (everything.pk, "job.failed")]
        )
        assert jobs.pk not in {e for e, _ in sent} and other_org.pk not in {e for e, _ in sent}

    def test_disabling_fails_pending_deliveries_and_stops_attempts(self, alice, acme):
        with webhook_receiver() as receiver:
            endpoint, _ = endpoint_for(alice, acme, receiver.url)
            paid(acme)
            webhook_endpoint_set_active(actor=alice, endpoint=endpoint, active=False)
            assert run_due_attempts() == ["done"]
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        assert (delivery.state, delivery.last_error, delivery.attempts) == ("failed", "endpoint disabled", 0)
        assert receiver.received == []


class TestDestinations:
    @pytest.mark.parametrize(
        "url",
        [
            "ftp://example.com/x",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "http:///nohost",
            "https://u:p@example.com/",
        ],
    )
    def test_refuses_urls_that_are_not_plain_http(self, url):
        assert destination_problem(url) is not None

    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1/",
            "http://localhost:8000/",
            "http://10.1.2.3/",
            "http://192.168.0.1/",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
            "http://100.64.0.1/",
        ],
    )
    def test_refuses_private_addresses_in_production(self, settings, url):
        settings.WEBHOOK_ALLOW_PRIVATE = False
        assert "private, loopback or reserved" in (destination_problem(url) or "")

    def test_accepts_a_public_address_in_production(self, settings):
        settings.WEBHOOK_ALLOW_PRIVATE = False
        assert destination_problem("https://93.184.215.14/hooks") is None

    def test_allows_loopback_when_configured(self):
        assert destination_problem("http://127.0.0.1:8080/hooks") is None

    def test_create_reports_each_bad_field(self, alice, acme, settings):
        settings.WEBHOOK_ALLOW_PRIVATE = False
        with pytest.raises(Invalid) as caught:
            webhook_endpoint_create(
                actor=alice,
                organisation=acme,
                url="http://127.0.0.1/",
                event_kinds=["order.paid", "BAD KIND!"],
            )
        assert caught.value.code == "common.webhook_invalid"
        assert [e["pointer"] for e in caught.value.errors] == ["/url", "/event_kinds/1"]
        assert not WebhookEndpoint.objects.exists()

    def test_the_audit_log_keeps_the_url_without_its_query(self, alice, acme):
        endpoint, _ = endpoint_for(alice, acme, "http://127.0.0.1:9/hook?token=receiver-secret#frag")
        webhook_endpoint_set_active(actor=alice, endpoint=endpoint, active=False)
        events = AuditEvent.objects.filter(action__startswith="webhook.").order_by("seq")
        assert [e.details["url"] for e in events] == ["http://127.0.0.1:9/hook"] * 2
        assert "receiver-secret" not in str([e.details for e in events])

    def test_a_delivery_to_an_address_refused_since_creation_fails_at_once(self, alice, acme, settings):
        endpoint, _ = endpoint_for(alice, acme, "http://127.0.0.1:9/x")
        settings.WEBHOOK_ALLOW_PRIVATE = False
        paid(acme)
        run_due_attempts()
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        assert delivery.state == DeliveryState.FAILED
        assert delivery.last_error.startswith("refused:")
