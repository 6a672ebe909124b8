"""The seam: grants, streams (re-checked per batch), usage once, privacy budget."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from common.models import AuditEvent
from custody import services
from custody.exceptions import Conflict, Invalid
from custody.models import Grant, UsageRecord
from custody.services.ingest import BATCH_RECORDS
from tests.custody.conftest import drain, jsonl
from tests.grants import grant_for_test


class TestGrantIssue:
    def test_snapshots_the_terms_and_is_idempotent_per_reference(self, sealed_version, bolt):
        terms = {"max_jobs": 2, "weights_may_leave": False, "purposes": ["research"]}
        first = services.grant_issue(
            version=sealed_version, licensee_org=bolt, terms=terms, external_ref="order-1"
        )
        again = services.grant_issue(
            version=sealed_version, licensee_org=bolt, terms=terms, external_ref="order-1"
        )
        assert first.pk == again.pk
        assert first.terms == terms
        assert AuditEvent.objects.filter(action="custody.grant_issue").count() == 1

    def test_rejects_an_unsealed_version(self, version, bolt):
        with pytest.raises(Conflict) as caught:
            services.grant_issue(version=version, licensee_org=bolt, terms={}, external_ref="x")
        assert caught.value.code == "custody.version_not_sealed"

    def test_rejects_an_epsilon_cap_above_the_versions(self, alice, dataset, upload, bolt):
        version = services.version_create(actor=alice, dataset=dataset, epsilon_cap=Decimal("4"))
        upload(version, jsonl([{"text": "hello there"}]))
        services.version_process(actor=alice, version=version)
        drain()
        services.version_seal(actor=alice, version=version)
        with pytest.raises(Invalid) as caught:
            grant_for_test(version, bolt, epsilon_cap=5)
        assert caught.value.errors[0]["pointer"] == "/terms/epsilon_cap"
        grant = grant_for_test(version, bolt, epsilon_cap=2)
        assert grant.terms["dp_required"] is True


class TestGrantJobReserve:
    def test_counts_each_job_once_and_stops_at_the_limit(self, sealed_version, bolt):
        grant = grant_for_test(sealed_version, bolt, max_jobs=2)
        services.grant_job_reserve(grant=grant, consumer_ref="job-1")
        services.grant_job_reserve(grant=grant, consumer_ref="job-1")
        services.grant_job_reserve(grant=grant, consumer_ref="job-2")
        with pytest.raises(Conflict) as caught:
            services.grant_job_reserve(grant=grant, consumer_ref="job-3")
        assert caught.value.code == "custody.grant_jobs_exhausted"
        grant.refresh_from_db()
        assert grant.jobs_reserved == 2

    def test_refuses_an_expired_grant(self, sealed_version, bolt):
        grant = grant_for_test(
            sealed_version, bolt, expires_at=(timezone.now() + timedelta(hours=1)).isoformat()
        )
        Grant.objects.filter(pk=grant.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        with pytest.raises(Conflict) as caught:
            services.grant_job_reserve(grant=grant, consumer_ref="job-1")
        assert caught.value.code == "custody.grant_expired"


class TestGrantJobRelease:
    def test_gives_back_the_slot_of_a_job_that_never_started(self, sealed_version, bolt):
        grant = grant_for_test(sealed_version, bolt, max_jobs=1)
        services.grant_job_reserve(grant=grant, consumer_ref="job-1")
        assert services.grant_job_release(grant=grant, consumer_ref="job-1") is True
        assert services.grant_job_release(grant=grant, consumer_ref="job-1") is False
        services.grant_job_reserve(grant=grant, consumer_ref="job-2")
        grant.refresh_from_db()
        assert grant.jobs_reserved == 1
        assert AuditEvent.objects.filter(action="custody.grant_job_release").count() == 1

    def test_keeps_the_slot_of_a_started_job(self, sealed_version, bolt):
        grant = grant_for_test(sealed_version, bolt, max_jobs=1)
        services.grant_job_reserve(grant=grant, consumer_ref="job-1")
        services.usage_record(grant=grant, consumer_ref="job-1", kind="job_started", quantity=1)
        with pytest.raises(Conflict) as caught:
            services.grant_job_release(grant=grant, consumer_ref="job-1")
        assert caught.value.code == "custody.grant_job_started"
        grant.refresh_from_db()
        assert grant.jobs_reserved == 1


class TestGrantStream:
    def test_yields_every_record_once_and_audits_the_open(self, sealed_version, bolt):
        grant = grant_for_test(sealed_version, bolt)
        stream = services.grant_stream_open(grant=grant, consumer_ref="job-1", purpose="license")
        ids = [r["id"] for batch in stream for r in batch]
        assert sorted(ids) == list(range(30))
        event = AuditEvent.objects.get(action="custody.stream_open")
        assert event.details["consumer_ref"] == "job-1" and event.organisation_id == bolt.pk

    def test_a_revoked_grant_stops_an_open_stream_at_the_next_batch(self, alice, dataset, upload, bolt):
        version = services.version_create(actor=alice, dataset=dataset)
        upload(version, jsonl([{"text": f"line {i}"} for i in range(BATCH_RECORDS * 2)]))
        services.version_process(actor=alice, version=version)
        drain()
        services.version_seal(actor=alice, version=version)
        grant = grant_for_test(version, bolt)
        stream = iter(services.grant_stream_open(grant=grant, consumer_ref="job-1", purpose="license"))
        first = next(stream)
        assert len(first) == BATCH_RECORDS
        services.grant_revoke(grant=grant, reason="takedown")
        with pytest.raises(Conflict) as caught:
            next(stream)
        assert caught.value.code == "custody.grant_revoked"

    def test_a_purpose_other_than_the_grants_is_refused(self, sealed_version, bolt):
        grant = grant_for_test(sealed_version, bolt)
        with pytest.raises(Conflict):
            services.grant_stream_open(grant=grant, consumer_ref="job-1", purpose="preview")


class TestUsageRecord:
    def test_never_counts_a_retried_job_twice(self, sealed_version, bolt):
        grant = grant_for_test(sealed_version, bolt)
        first = services.usage_record(grant=grant, consumer_ref="job-1", kind="tokens_trained", quantity=500)
        again = services.usage_record(grant=grant, consumer_ref="job-1", kind="tokens_trained", quantity=900)
        assert first.pk == again.pk and again.quantity == 500
        assert UsageRecord.objects.count() == 1

    def test_rejects_unknown_kinds(self, sealed_version, bolt):
        grant = grant_for_test(sealed_version, bolt)
        with pytest.raises(Invalid):
            services.usage_record(grant=grant, consumer_ref="job-1", kind="downloads", quantity=1)


class TestPrivacyBudget:
    @pytest.fixture
    def capped(self, alice, dataset, upload):
        version = services.version_create(actor=alice, dataset=dataset, epsilon_cap=Decimal("3"))
        upload(version, jsonl([{"text": "hello there"}]))
        services.version_process(actor=alice, version=version)
        drain()
        return services.version_seal(actor=alice, version=version)

    def test_reservations_stop_at_the_cap_and_releases_give_back(self, capped):
        services.privacy_budget_reserve(version=capped, consumer_ref="a", epsilon=Decimal("2"))
        with pytest.raises(Conflict) as caught:
            services.privacy_budget_reserve(version=capped, consumer_ref="b", epsilon=Decimal("1.5"))
        assert caught.value.code == "custody.privacy_budget_exhausted"
        services.privacy_budget_release(version=capped, consumer_ref="a")
        services.privacy_budget_reserve(version=capped, consumer_ref="b", epsilon=Decimal("1.5"))

    def test_a_committed_budget_is_never_released(self, capped):
        services.privacy_budget_reserve(version=capped, consumer_ref="a", epsilon=Decimal("1"))
        services.privacy_budget_commit(version=capped, consumer_ref="a")
        with pytest.raises(Conflict):
            services.privacy_budget_release(version=capped, consumer_ref="a")
