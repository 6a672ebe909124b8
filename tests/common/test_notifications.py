"""Notifications: notify_event, the API (list, mark read, webhooks, delivery log) and the pages."""

from __future__ import annotations

import json
import re

import pytest
from django.db import transaction
from django.test import Client
from django.urls import reverse

from common.models import AuditEvent, Notification, WebhookDelivery, WebhookEndpoint
from common.notifications import (
    MAX_PAYLOAD_BYTES,
    notification_unread_count,
    notifications_mark_read,
    notify_event,
)
from common.webhooks import webhook_endpoint_create
from tests.common.test_webhooks import run_due_attempts
from tests.common.webhook_receiver import webhook_receiver

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _loopback_allowed(settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True


def notify(org, n: int = 1, kind: str = "job.succeeded") -> None:
    for i in range(n):
        notify_event(
            organisation=org,
            kind=kind,
            subject=f"Job {i} succeeded",
            payload={"job_id": i, "metrics": {"loss": 0.25}},
            object_type="job",
            object_id=i,
        )


def problem_of(response) -> dict:
    assert response["Content-Type"] == "application/problem+json"
    return json.loads(response.content)


class TestNotifyEvent:
    def test_stores_a_notification_for_the_organisation(self, acme):
        notify(acme)
        notification = Notification.objects.get()
        assert (notification.organisation, notification.kind, notification.subject) == (
            acme,
            "job.succeeded",
            "Job 0 succeeded",
        )
        assert notification.payload == {"job_id": 0, "metrics": {"loss": 0.25}}
        assert (notification.object_type, notification.object_id, notification.read_at) == ("job", "0", None)

    def test_without_endpoints_creates_no_deliveries(self, acme):
        notify(acme)
        assert not WebhookDelivery.objects.exists()

    @pytest.mark.parametrize("kind", ["paid", "Order.Paid", "order..paid", "order.paid!", ""])
    def test_refuses_a_malformed_kind(self, acme, kind):
        with pytest.raises(ValueError, match="dotted"):
            notify_event(organisation=acme, kind=kind, subject="x", payload={})
        assert not Notification.objects.exists()

    def test_refuses_a_payload_that_is_too_large_or_not_json(self, acme):
        with pytest.raises(ValueError, match="exceeds"):
            notify_event(organisation=acme, kind="a.b", subject="x", payload={"x": "y" * MAX_PAYLOAD_BYTES})
        with pytest.raises(ValueError, match="JSON"):
            notify_event(organisation=acme, kind="a.b", subject="x", payload={"x": float("nan")})
        with pytest.raises(ValueError, match="JSON"):
            notify_event(organisation=acme, kind="a.b", subject="x", payload={"x": {(1, 2): "tuple key"}})
        assert not Notification.objects.exists()

    def test_rolls_back_with_the_caller(self, acme):
        with pytest.raises(RuntimeError), transaction.atomic():
            notify(acme)
            raise RuntimeError("caller failed")
        assert not Notification.objects.exists()

    def test_marking_read_counts_only_this_organisations_unread(self, acme, bolt):
        notify(acme, 3)
        notify(bolt, 1)
        mine = list(
            Notification.objects.filter(organisation=acme).order_by("pk").values_list("pk", flat=True)
        )
        theirs = Notification.objects.get(organisation=bolt).pk
        assert notifications_mark_read(organisation=acme, ids=[mine[0], theirs]) == 1
        assert notification_unread_count(organisation=acme) == 2
        assert notification_unread_count(organisation=bolt) == 1
        assert notifications_mark_read(organisation=acme) == 2
        assert notifications_mark_read(organisation=acme) == 0


class TestNotificationApi:
    def test_lists_newest_first_and_filters_unread(self, acme, acme_member, token_for):
        notify(acme, 3)
        client = token_for(acme_member, acme, ["read", "provide"])
        url = reverse("api-notifications", kwargs={"org_id": acme.public_id})
        body = client.get(url).json()
        assert body["count"] == 3
        assert [n["subject"] for n in body["results"]] == [
            "Job 2 succeeded",
            "Job 1 succeeded",
            "Job 0 succeeded",
        ]
        first = body["results"][0]
        assert set(first) == {
            "id",
            "event_id",
            "kind",
            "subject",
            "payload",
            "object_type",
            "object_id",
            "created_at",
            "read_at",
        }
        marked = client.post(url, {"ids": [first["id"]]}, format="json")
        assert marked.status_code == 200
        assert marked.json() == {"marked": 1, "unread": 2}
        assert client.get(url + "?unread=1").json()["count"] == 2
        assert client.post(url, {}, format="json").json() == {"marked": 2, "unread": 0}

    def test_a_read_only_token_lists_but_does_not_mark_read(self, acme, acme_viewer, token_for):
        notify(acme, 1)
        client = token_for(acme_viewer, acme, ["read"])
        url = reverse("api-notifications", kwargs={"org_id": acme.public_id})
        assert client.get(url).json()["count"] == 1
        refused = client.post(url, {}, format="json")
        assert refused.status_code == 403
        assert problem_of(refused)["code"] == "common.token_scope_missing"
        assert notification_unread_count(organisation=acme) == 1

    def test_bad_ids_get_a_problem_with_a_pointer(self, acme, alice, token_for):
        client = token_for(alice, acme, ["read", "admin"])
        url = reverse("api-notifications", kwargs={"org_id": acme.public_id})
        response = client.post(url, {"ids": ["x"]}, format="json")
        assert response.status_code == 422
        problem = problem_of(response)
        assert problem["errors"][0]["pointer"] == "/ids/0"

    def test_another_organisation_answers_404(self, acme, bob, bolt, token_for):
        notify(acme)
        client = token_for(bob, bolt, ["read"])
        response = client.get(reverse("api-notifications", kwargs={"org_id": acme.public_id}))
        assert response.status_code == 404


class TestWebhookApi:
    def test_admin_registers_an_endpoint_and_sees_the_secret_once(self, acme, alice, token_for):
        client = token_for(alice, acme, ["read", "admin"])
        url = reverse("api-webhooks", kwargs={"org_id": acme.public_id})
        created = client.post(
            url,
            {"url": "http://127.0.0.1:9/hook", "event_kinds": ["order.*"], "description": "ERP"},
            format="json",
        )
        assert created.status_code == 201
        body = created.json()
        assert body["secret"].startswith("whsec_") and len(body["secret"]) > 40
        assert body["event_kinds"] == ["order.*"] and body["active"] is True
        endpoint = WebhookEndpoint.objects.get()
        assert endpoint.secret == body["secret"]
        listed = client.get(url).json()["results"]
        detail = client.get(
            reverse("api-webhook-detail", kwargs={"org_id": acme.public_id, "webhook_id": endpoint.public_id})
        )
        for shown in (listed[0], detail.json()):
            assert "secret" not in shown
            assert body["secret"] not in json.dumps(shown)
        event = AuditEvent.objects.get(action="webhook.create")
        assert body["secret"] not in json.dumps(event.details)

    def test_refused_url_gets_a_problem_with_pointers(self, acme, alice, token_for, settings):
        settings.WEBHOOK_ALLOW_PRIVATE = False
        client = token_for(alice, acme, ["read", "admin"])
        response = client.post(
            reverse("api-webhooks", kwargs={"org_id": acme.public_id}),
            {"url": "http://169.254.169.254/latest", "event_kinds": ["ok.kind", "no good"]},
            format="json",
        )
        assert response.status_code == 422
        problem = problem_of(response)
        assert problem["code"] == "common.webhook_invalid"
        assert [e["pointer"] for e in problem["errors"]] == ["/url", "/event_kinds/1"]
        assert not WebhookEndpoint.objects.exists()

    def test_a_read_only_token_of_an_admin_may_not_register_one(self, acme, alice, token_for):
        client = token_for(alice, acme, ["read", "provide", "order"])
        url = reverse("api-webhooks", kwargs={"org_id": acme.public_id})
        response = client.post(url, {"url": "http://127.0.0.1:9/hook"}, format="json")
        assert response.status_code == 403
        assert problem_of(response)["code"] == "common.token_scope_missing"
        assert "secret" not in response.content.decode()
        assert not WebhookEndpoint.objects.exists()
        assert client.get(url).status_code == 200

    def test_members_may_not_manage_webhooks(self, acme, acme_member, token_for):
        client = token_for(acme_member, acme, ["read", "admin"])
        response = client.post(
            reverse("api-webhooks", kwargs={"org_id": acme.public_id}),
            {"url": "http://127.0.0.1:9/"},
            format="json",
        )
        assert response.status_code == 403
        assert problem_of(response)["code"] == "common.role_insufficient"

    def test_disable_delete_and_the_delivery_log(self, acme, alice, token_for):
        client = token_for(alice, acme, ["read", "admin"])
        with webhook_receiver(statuses=[500]) as receiver:
            endpoint, _secret = webhook_endpoint_create(actor=alice, organisation=acme, url=receiver.url)
            notify(acme, 2)
            run_due_attempts()
        log_url = reverse(
            "api-webhook-deliveries", kwargs={"org_id": acme.public_id, "webhook_id": endpoint.public_id}
        )
        log = client.get(log_url).json()
        assert log["count"] == 2
        states = sorted((d["state"], d["attempts"], d["last_status"]) for d in log["results"])
        assert states == [("delivered", 1, 200), ("pending", 1, 500)]
        assert {d["kind"] for d in log["results"]} == {"job.succeeded"}
        detail = reverse(
            "api-webhook-detail", kwargs={"org_id": acme.public_id, "webhook_id": endpoint.public_id}
        )
        disabled = client.patch(detail, {"active": False}, format="json")
        assert disabled.status_code == 200 and disabled.json()["active"] is False
        assert WebhookDelivery.objects.filter(state="pending").count() == 0
        assert client.delete(detail).status_code == 204
        assert not WebhookEndpoint.objects.exists() and not WebhookDelivery.objects.exists()
        assert client.get(detail).status_code == 404
        actions = list(
            AuditEvent.objects.filter(action__startswith="webhook.").values_list("action", flat=True)
        )
        assert actions == ["webhook.create", "webhook.disable", "webhook.delete"]

    def test_another_organisations_endpoint_answers_404(self, acme, alice, bob, bolt, token_for):
        endpoint, _ = webhook_endpoint_create(actor=bob, organisation=bolt, url="http://127.0.0.1:9/")
        client = token_for(alice, acme, ["read"])
        for name in ("api-webhook-detail", "api-webhook-deliveries"):
            response = client.get(
                reverse(name, kwargs={"org_id": acme.public_id, "webhook_id": endpoint.public_id})
            )
            assert response.status_code == 404


class TestPages:
    def test_nav_shows_the_unread_count_and_the_page_lists_notifications(self, acme, acme_viewer):
        notify(acme, 2)
        client = Client()
        client.force_login(acme_viewer)
        page = client.get(reverse("common:notifications", kwargs={"org_id": acme.public_id}))
        html = page.content.decode()
        assert page.status_code == 200
        assert "Job 1 succeeded" in html and "Job 0 succeeded" in html
        assert '2<span class="visually-hidden"> unread</span>' in html
        response = client.post(reverse("common:notifications_read", kwargs={"org_id": acme.public_id}))
        assert response.status_code == 302
        html = client.get(reverse("portal:home")).content.decode()
        assert 'visually-hidden"> unread' not in html
        assert notification_unread_count(organisation=acme) == 0

    @pytest.mark.parametrize("raw", ["²", "9" * 25, "all", "7", "ntf_7"])
    def test_an_id_that_is_not_one_marks_nothing(self, acme, acme_viewer, raw):
        notify(acme, 2)
        client = Client()
        client.force_login(acme_viewer)
        url = reverse("common:notifications_read", kwargs={"org_id": acme.public_id})
        response = client.post(url, {"id": raw}, follow=True)
        assert response.status_code == 200
        assert "That is not a notification id; nothing was marked read." in response.content.decode()
        assert notification_unread_count(organisation=acme) == 2

    def test_admin_registers_a_webhook_and_sees_its_secret_once(self, acme, alice):
        client = Client()
        client.force_login(alice)
        url = reverse("common:webhooks", kwargs={"org_id": acme.public_id})
        response = client.post(url, {"url": "http://127.0.0.1:9/hook", "event_kinds": "order.*, job.failed"})
        assert response.status_code == 200
        endpoint = WebhookEndpoint.objects.get()
        assert endpoint.event_kinds == ["order.*", "job.failed"]
        assert endpoint.secret in response.content.decode()
        assert "no-cache" in response["Cache-Control"] or "no-store" in response["Cache-Control"]
        listing = client.get(url).content.decode()
        detail = client.get(
            reverse("common:webhook", kwargs={"org_id": acme.public_id, "webhook_id": endpoint.public_id})
        )
        assert endpoint.secret not in listing and endpoint.secret not in detail.content.decode()

    def test_bad_form_shows_the_error_beside_the_field(self, acme, alice):
        client = Client()
        client.force_login(alice)
        response = client.post(
            reverse("common:webhooks", kwargs={"org_id": acme.public_id}), {"url": "ftp://x/"}
        )
        assert response.status_code == 422
        assert "Use an http or https URL." in response.content.decode()
        assert not WebhookEndpoint.objects.exists()

    def test_delivery_log_page_shows_attempts(self, acme, alice):
        with webhook_receiver(statuses=[503]) as receiver:
            endpoint, _ = webhook_endpoint_create(actor=alice, organisation=acme, url=receiver.url)
            notify(acme, kind="order.paid")
            run_due_attempts()
        client = Client()
        client.force_login(alice)
        html = client.get(
            reverse("common:webhook", kwargs={"org_id": acme.public_id, "webhook_id": endpoint.public_id})
        ).content
        text = html.decode()
        assert "order.paid" in text and "HTTP 503" in text and "pending" in text

    def test_pages_carry_no_inline_script_or_style(self, acme, alice):
        endpoint, _ = webhook_endpoint_create(actor=alice, organisation=acme, url="http://127.0.0.1:9/")
        notify(acme)
        client = Client()
        client.force_login(alice)
        for url in (
            reverse("common:notifications", kwargs={"org_id": acme.public_id}),
            reverse("common:webhooks", kwargs={"org_id": acme.public_id}),
            reverse("common:webhook", kwargs={"org_id": acme.public_id, "webhook_id": endpoint.public_id}),
        ):
            page = client.get(url).content.decode()
            assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page)
            assert "<style" not in page
            assert not re.search(r"\sstyle=", page)
            assert not re.search(r"\son[a-z]+=", page)
            assert "https://" not in page

    def test_toggle_and_delete(self, acme, alice):
        endpoint, _ = webhook_endpoint_create(actor=alice, organisation=acme, url="http://127.0.0.1:9/")
        client = Client()
        client.force_login(alice)
        kwargs = {"org_id": acme.public_id, "webhook_id": endpoint.public_id}
        client.post(reverse("common:webhook_toggle", kwargs=kwargs), {"active": "false"})
        endpoint.refresh_from_db()
        assert endpoint.active is False and endpoint.disabled_at is not None
        client.post(reverse("common:webhook_toggle", kwargs=kwargs), {"active": "true"})
        endpoint.refresh_from_db()
        assert endpoint.active is True
        response = client.post(reverse("common:webhook_delete", kwargs=kwargs))
        assert response.status_code == 302
        assert not WebhookEndpoint.objects.exists()
