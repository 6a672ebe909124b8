"""The foundation's list pages and endpoints: the same queries for 3 or 9 rows, and a page-size bound.

Members, invitations, API tokens, notifications, webhook endpoints and their
delivery logs, as pages and through the API.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import cast

import pytest
from django.urls import reverse
from django.utils import timezone

from common import services
from common.models import (
    Invitation,
    Notification,
    Organisation,
    Role,
    User,
    WebhookDelivery,
    WebhookEndpoint,
)
from common.pages import notifications as notification_pages
from common.pages import organisations as organisation_pages
from common.pages import tokens as token_pages
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.list_queries import PAGE, N, load, measure, measure_api, measure_page, next_link, serial, signed_in

pytestmark = pytest.mark.django_db


def add_members(organisation: Organisation, k: int) -> None:
    for _ in range(k):
        MembershipFactory(user=UserFactory(username=f"member{serial()}"), organisation=organisation)


def add_invitations(organisation: Organisation, k: int) -> None:
    """Open invitations, each from a different admin (the page names who invited)."""
    for _ in range(k):
        n = serial()
        inviter = cast(User, UserFactory(username=f"inviter{n}"))
        Invitation.objects.create(
            organisation=organisation,
            email=f"guest{n}@example.test",
            role=Role.MEMBER,
            token_hash=uuid.uuid4().hex,
            invited_by=inviter,
            expires_at=timezone.now() + timedelta(days=7),
        )


def add_tokens(user: User, k: int) -> None:
    """Tokens of ``user``, each in another organisation (the list names the organisation)."""
    for _ in range(k):
        org = cast(Organisation, OrganisationFactory(name=f"Token org {serial()}"))
        MembershipFactory(user=user, organisation=org, role=Role.ADMIN)
        services.api_token_create(user=user, organisation=org, name="script", scopes=["read"])


def add_notifications(organisation: Organisation, k: int) -> None:
    Notification.objects.bulk_create(
        Notification(organisation=organisation, kind="order.paid", subject=f"Order {serial()} paid")
        for _ in range(k)
    )


def add_endpoints(organisation: Organisation, by: User, k: int) -> None:
    WebhookEndpoint.objects.bulk_create(
        WebhookEndpoint(
            organisation=organisation,
            url=f"https://hooks.example.test/{serial()}",
            secret="whsec_test",
            created_by=by,
        )
        for _ in range(k)
    )


def add_deliveries(endpoint: WebhookEndpoint, k: int) -> None:
    WebhookDelivery.objects.bulk_create(
        WebhookDelivery(endpoint=endpoint, kind="order.paid", payload={"n": serial()}) for _ in range(k)
    )


@pytest.fixture
def endpoint(acme, alice) -> WebhookEndpoint:
    return WebhookEndpoint.objects.create(
        organisation=acme, url="https://hooks.example.test/main", secret="whsec_test", created_by=alice
    )


class TestFoundationPages:
    def test_the_member_list_is_flat_and_paginated(self, alice, acme, monkeypatch):
        monkeypatch.setattr(organisation_pages, "MEMBERS_PER_PAGE", PAGE)
        client = signed_in(alice)
        url = reverse("common:org", args=[acme.public_id])
        measure_page(client, url, lambda k: add_members(acme, k), "members", rows=1 + 3 * N)

    def test_open_invitations_cost_the_same_queries_for_few_or_many(self, alice, acme):
        client = signed_in(alice)
        url = reverse("common:org", args=[acme.public_id])
        measure(lambda: load(client, url), lambda k: add_invitations(acme, k), "invitations")

    def test_the_token_list_is_flat_and_paginated(self, alice, monkeypatch):
        monkeypatch.setattr(token_pages, "TOKENS_PER_PAGE", PAGE)
        client = signed_in(alice)
        measure_page(client, reverse("common:tokens"), lambda k: add_tokens(alice, k), "tokens")

    def test_the_notification_list_is_flat_and_paginated(self, acme_viewer, acme, monkeypatch):
        monkeypatch.setattr(notification_pages, "NOTIFICATIONS_PER_PAGE", PAGE)
        client = signed_in(acme_viewer)
        url = reverse("common:notifications", args=[acme.public_id])
        measure_page(client, url, lambda k: add_notifications(acme, k), "notifications")
        assert next_link(client, url, {"unread": "1"}) == "?unread=1&page=2", "the filter is kept"

    def test_the_webhook_list_is_flat(self, alice, acme):
        # At most MAX_ENDPOINTS_PER_ORG (20) endpoints: bounded without pages.
        client = signed_in(alice)
        url = reverse("common:webhooks", args=[acme.public_id])
        measure(lambda: load(client, url), lambda k: add_endpoints(acme, alice, k), "webhooks")

    def test_the_delivery_log_is_flat_and_paginated(self, alice, acme, endpoint, monkeypatch):
        monkeypatch.setattr(notification_pages, "DELIVERIES_PER_PAGE", PAGE)
        client = signed_in(alice)
        url = reverse("common:webhook", args=[acme.public_id, endpoint.public_id])
        measure_page(client, url, lambda k: add_deliveries(endpoint, k), "deliveries")


class TestFoundationApi:
    def test_the_member_list_is_flat_and_paginated(self, alice, acme, token_for):
        client = token_for(alice, acme, ["read"])
        url = reverse("api-members", args=[acme.public_id])
        measure_api(client, url, lambda k: add_members(acme, k), "api members", rows=1 + 3 * N)

    def test_the_token_list_is_flat_and_paginated(self, alice, acme, token_for):
        client = token_for(alice, acme, ["read"])
        url = reverse("api-tokens")
        measure_api(client, url, lambda k: add_tokens(alice, k), "api tokens", rows=1 + 3 * N)

    def test_the_notification_list_is_flat_and_paginated(self, alice, acme, token_for):
        client = token_for(alice, acme, ["read"])
        url = reverse("api-notifications", args=[acme.public_id])
        measure_api(client, url, lambda k: add_notifications(acme, k), "api notes")

    def test_the_webhook_list_is_flat_and_paginated(self, alice, acme, token_for):
        client = token_for(alice, acme, ["read"])
        url = reverse("api-webhooks", args=[acme.public_id])
        measure_api(client, url, lambda k: add_endpoints(acme, alice, k), "api webhooks")

    def test_the_delivery_log_is_flat_and_paginated(self, alice, acme, endpoint, token_for):
        client = token_for(alice, acme, ["read"])
        url = reverse("api-webhook-deliveries", args=[acme.public_id, endpoint.public_id])
        measure_api(client, url, lambda k: add_deliveries(endpoint, k), "api deliveries")
