"""The portal's and the console's list pages: the same queries for 3 or 9 rows, and a page-size bound.

The dashboard (datasets, listings, jobs), the provider's data access log, and
the audit console's event log and key list.
"""

from __future__ import annotations

from typing import cast

import pytest
from django.db import transaction
from django.urls import reverse

from common.audit import audit_integrate, audit_record
from common.models import Organisation
from custody import services as custody
from custody.models import GrantJob, UsageKind
from portal import pages as portal_pages
from portal.console import audit as audit_pages
from portal.console import keys as key_pages
from tests.factories import OrganisationFactory
from tests.list_queries import (
    PAGE,
    add_jobs,
    add_licenses,
    add_sealed_versions,
    load,
    measure,
    measure_page,
    serial,
    signed_in,
)

pytestmark = pytest.mark.django_db


def add_access(owner: Organisation, licensee: Organisation, k: int) -> None:
    """``k`` jobs run under licenses on the owner's versions, each with its usage and stream open."""
    for grant in add_licenses(owner, licensee, k, max_jobs=3):
        ref = f"training-job-{serial()}"
        GrantJob.objects.create(grant=grant, consumer_ref=ref)
        custody.usage_record(grant=grant, consumer_ref=ref, kind=UsageKind.JOB_STARTED, quantity=1)
        with transaction.atomic():
            audit_record(
                action="custody.stream_open",
                object_type="grant",
                object_id=grant.pk,
                details={"consumer_ref": ref},
            )


def add_events(k: int) -> None:
    with transaction.atomic():
        for _ in range(k):
            org = cast(Organisation, OrganisationFactory(name=f"Audited {serial()}"))
            audit_record(action="test.event", organisation=org, object_type="thing", object_id=serial())
    audit_integrate()  # the console lists integrated events (what the sequencer does after commit)


class TestPortalPages:
    def test_the_access_log_is_flat_and_paginated(self, alice, acme, bolt, monkeypatch):
        monkeypatch.setattr(portal_pages, "ACCESS_ROWS_PER_PAGE", PAGE)
        client = signed_in(alice)
        url = reverse("portal:access_log")
        measure_page(client, url, lambda k: add_access(acme, bolt, k), "access log")

    def test_the_providers_dashboard_is_flat(self, alice, acme, bolt):
        client = signed_in(alice)
        measure(
            lambda: load(client, reverse("portal:home")), lambda k: add_access(acme, bolt, k), "provider home"
        )

    def test_the_trainers_dashboard_is_flat(self, bob, bolt, acme):
        client = signed_in(bob)
        measure(
            lambda: load(client, reverse("portal:home")), lambda k: add_jobs(bolt, acme, k), "trainer home"
        )


class TestConsolePages:
    def test_the_audit_log_is_flat_and_paged_by_sequence(self, audrey, monkeypatch):
        monkeypatch.setattr(audit_pages, "EVENTS_PER_PAGE", PAGE)
        client = signed_in(audrey)
        _few, many = measure(lambda: load(client, reverse("console:audit")), add_events, "audit log")
        context = many.response.context
        assert len(context["events"]) == PAGE
        assert context["has_older"]
        assert f"before={context['oldest_seq']}" in many.response.content.decode()

    def test_the_key_list_is_flat_and_paginated(self, audrey, monkeypatch):
        monkeypatch.setattr(key_pages, "VERSIONS_PER_PAGE", PAGE)
        client = signed_in(audrey)
        measure_page(client, reverse("console:keys"), add_sealed_versions, "console keys")
