"""The portal's and the console's list pages: the same queries for 3 or 9 rows, and a page-size bound.

The dashboard (datasets, listings, jobs), the provider's data access log, and
the audit console's event log and key list.
"""

from __future__ import annotations

from itertools import count
from typing import cast

import pytest
from django.db import transaction
from django.urls import reverse

from common.audit import audit_record
from common.models import Organisation
from custody import services as custody
from custody.models import GrantJob, UsageKind
from portal import pages as portal_pages
from portal.console import audit as audit_pages
from portal.console import keys as key_pages
from tests.factories import OrganisationFactory
from tests.grants import grant_for_test
from tests.list_queries import PAGE, N, assert_page_bounded, load, measure, sealed_version, signed_in
from training.models import BaseModel, TrainingJob

pytestmark = pytest.mark.django_db

SERIAL = count(1)


def add_access(owner: Organisation, licensee: Organisation, k: int) -> None:
    """``k`` jobs run under licenses on the owner's versions, each with its usage and stream open."""
    for _ in range(k):
        n = next(SERIAL)
        grant = grant_for_test(sealed_version(owner, f"Accessed {n}"), licensee, max_jobs=3)
        GrantJob.objects.create(grant=grant, consumer_ref=f"training-job-{n}")
        custody.usage_record(
            grant=grant, consumer_ref=f"training-job-{n}", kind=UsageKind.JOB_STARTED, quantity=1
        )
        with transaction.atomic():
            audit_record(
                action="custody.stream_open",
                object_type="grant",
                object_id=grant.pk,
                details={"consumer_ref": f"training-job-{n}"},
            )


def add_jobs(trainer: Organisation, provider: Organisation, k: int) -> None:
    tiny = BaseModel.objects.get(name="gpt2-tiny", owner=None)
    for _ in range(k):
        grant = grant_for_test(sealed_version(provider, f"Trained {next(SERIAL)}"), trainer, max_jobs=3)
        TrainingJob.objects.create(organisation=trainer, grant=grant, template="causal_lm", base=tiny)


def add_events(k: int) -> None:
    with transaction.atomic():
        for _ in range(k):
            org = cast(Organisation, OrganisationFactory(name=f"Audited {next(SERIAL)}"))
            audit_record(action="test.event", organisation=org, object_type="thing", object_id=next(SERIAL))


class TestPortalPages:
    def test_the_access_log_is_flat_and_paginated(self, alice, acme, bolt, monkeypatch):
        monkeypatch.setattr(portal_pages, "ACCESS_ROWS_PER_PAGE", PAGE)
        client = signed_in(alice)
        url = reverse("portal:access_log")
        _few, many = measure(lambda: load(client, url), lambda k: add_access(acme, bolt, k), "access log")
        assert_page_bounded(many, rows=3 * N)

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

        def more_versions(k: int) -> None:
            for _ in range(k):
                sealed_version(OrganisationFactory(name=f"Keyed {next(SERIAL)}"), f"Keyed {next(SERIAL)}")

        _few, many = measure(lambda: load(client, reverse("console:keys")), more_versions, "console keys")
        assert_page_bounded(many, rows=3 * N)
