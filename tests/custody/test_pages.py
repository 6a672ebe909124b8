"""Custody pages: datasets, versions with live progress, the report, drops and sealing."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from common.models import AuditEvent, User
from custody import services
from custody.charts import bar_chart, totals_by_key
from custody.models import Dataset, DatasetVersion, Finding, VersionState
from tests.custody.conftest import drain, jsonl
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory

pytestmark = pytest.mark.django_db

TICKETS = [
    {
        "text": f"Ticket {i}: please call Maria Lopez at maria.lopez{i}@example.com about floor {i % 7}.",
        "topic": "printers",
    }
    for i in range(12)
]


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def html(response) -> str:
    return response.content.decode()


def url(name: str, **kwargs: str) -> str:
    return reverse(f"custody:{name}", kwargs=kwargs)


@pytest.fixture
def reviewed(alice, version, upload) -> DatasetVersion:
    """Version 1 in review: 12 tickets with names and e-mails, and one exact duplicate."""
    upload(version, jsonl([*TICKETS, TICKETS[0]]), metadata_fields=["topic"])
    services.version_process(actor=alice, version=version)
    drain()
    version.refresh_from_db()
    assert version.state == VersionState.REVIEW
    return version


@pytest.fixture
def cora_admin(db) -> User:
    """carol-like: an admin of another provider, Cora Texts."""
    cora = OrganisationFactory(name="Cora Texts", is_provider=True)
    user = UserFactory(username="cora-admin")
    MembershipFactory(user=user, organisation=cora, role="admin")
    assert isinstance(user, User)
    return user


class TestDatasetList:
    def test_lists_the_current_organisations_datasets_with_their_latest_version(self, alice, version):
        response = client_for(alice).get(url("datasets"))
        assert response.status_code == 200
        page = html(response)
        assert "Support tickets" in page
        assert 'data-state="uploading"' in page
        assert f'href="{url("datasets")}" aria-current="page">Datasets</a>' in page

    def test_a_member_creates_a_dataset_with_a_named_policy(self, acme_member, acme):
        response = client_for(acme_member).post(
            url("datasets"), {"name": "Call notes", "description": "Phone notes", "policy": "pseudonym"}
        )
        dataset = Dataset.objects.get(owner=acme, name="Call notes")
        assert response.status_code == 302
        assert response["Location"] == url("dataset", dataset_id=dataset.public_id)
        assert dataset.policy["name"] == "pseudonym"
        assert dataset.policy["default_operator"]["kind"] == "pseudonym"

    def test_a_taken_name_is_explained_next_to_the_field_and_the_input_kept(self, alice, dataset):
        response = client_for(alice).post(
            url("datasets"), {"name": "Support tickets", "description": "again", "policy": "default"}
        )
        assert response.status_code == 200
        page = html(response)
        assert re.search(r'id="id_name_error"><li>Acme Corpora already has a dataset named', page)
        assert re.search(r">\s*again</textarea>", page)
        assert Dataset.objects.count() == 1

    def test_an_empty_form_names_the_missing_field(self, alice):
        page = html(client_for(alice).post(url("datasets"), {}))
        assert 'id="id_name_error"' in page

    def test_a_viewer_reads_but_does_not_create(self, acme_viewer, dataset):
        client = client_for(acme_viewer)
        page = html(client.get(url("datasets")))
        assert "Support tickets" in page
        assert "Create a dataset" not in page
        assert client.post(url("datasets"), {"name": "Sneaky", "policy": "default"}).status_code == 403
        assert not Dataset.objects.filter(name="Sneaky").exists()

    def test_a_trainer_organisation_has_no_datasets_and_no_nav_link(self, bob):
        client = client_for(bob)
        assert client.get(url("datasets")).status_code == 403
        assert url("datasets") not in html(client.get("/"))

    def test_the_list_costs_the_same_queries_for_two_or_forty_datasets(self, alice, acme):
        def queries() -> int:
            client = client_for(alice)
            with CaptureQueriesContext(connection) as captured:
                assert client.get(url("datasets")).status_code == 200
            return len(captured)

        for i in range(2):
            services.version_create(
                actor=alice, dataset=services.dataset_create(actor=alice, organisation=acme, name=f"Set {i}")
            )
        few = queries()
        for i in range(2, 40):
            services.dataset_create(actor=alice, organisation=acme, name=f"Set {i}")
        assert queries() == few


class TestDatasetPage:
    def test_shows_versions_with_state_and_progress(self, alice, reviewed):
        page = html(client_for(alice).get(url("dataset", dataset_id=reviewed.dataset.public_id)))
        assert f'href="{url("version", version_id=reviewed.public_id)}">Version 1</a>' in page
        assert 'data-state="review"' in page
        assert 'max="13" value="13"' in page

    def test_another_organisations_dataset_is_not_found(self, cora_admin, dataset):
        client = client_for(cora_admin)
        assert client.get(url("dataset", dataset_id=dataset.public_id)).status_code == 404
        assert client.post(url("version_create", dataset_id=dataset.public_id)).status_code == 404

    def test_a_member_opens_a_version_with_an_epsilon_cap(self, acme_member, dataset):
        response = client_for(acme_member).post(
            url("version_create", dataset_id=dataset.public_id), {"epsilon_cap": "2.5"}
        )
        version = dataset.versions.get()
        assert response.status_code == 302
        assert response["Location"] == url("version", version_id=version.public_id)
        assert version.epsilon_cap == Decimal("2.5")

    def test_a_bad_epsilon_cap_is_explained_next_to_the_field(self, alice, dataset):
        response = client_for(alice).post(
            url("version_create", dataset_id=dataset.public_id), {"epsilon_cap": "-1"}
        )
        assert response.status_code == 200
        assert 'id="id_epsilon_cap_error"' in html(response)
        assert not dataset.versions.exists()

    def test_a_viewer_cannot_open_versions(self, acme_viewer, dataset):
        client = client_for(acme_viewer)
        assert "Open a new version" not in html(client.get(url("dataset", dataset_id=dataset.public_id)))
        assert client.post(url("version_create", dataset_id=dataset.public_id)).status_code == 403
        assert not dataset.versions.exists()


class TestVersionPage:
    def test_an_open_version_has_the_upload_widget_wired_to_the_api(self, alice, version):
        page = html(client_for(alice).get(url("version", version_id=version.public_id)))
        assert f'data-start-url="/api/v1/versions/{version.public_id}/contributions"' in page
        assert 'data-contribution-url="/api/v1/contributions/"' in page
        assert re.search(r'data-part-size="\d+"', page)
        assert "js/upload.js" in page
        assert "Close uploads and process" in page

    def test_a_viewer_sees_the_state_but_no_upload_or_buttons(self, acme_viewer, version):
        page = html(client_for(acme_viewer).get(url("version", version_id=version.public_id)))
        assert 'data-state="uploading"' in page
        assert "data-upload" not in page
        assert "Close uploads and process" not in page
        assert "Abandon" not in page

    def test_closing_uploads_starts_processing_and_the_status_polls(self, alice, version, upload):
        upload(version, jsonl(TICKETS))
        client = client_for(alice)
        response = client.post(url("version_process", version_id=version.public_id))
        assert response.status_code == 302
        version.refresh_from_db()
        assert version.state == VersionState.PROCESSING
        page = html(client.get(url("version", version_id=version.public_id)))
        assert 'hx-trigger="every 2s"' in page
        assert f'hx-get="{url("version_status", version_id=version.public_id)}?state=processing"' in page
        assert "Uploads are closed." in page
        assert "Close uploads and process" not in page

    def test_the_status_fragment_reports_progress(self, alice, reviewed):
        response = client_for(alice).get(
            url("version_status", version_id=reviewed.public_id), HTTP_HX_REQUEST="true"
        )
        page = html(response)
        assert response.status_code == 200
        assert page.lstrip().startswith('<div id="version-status"')
        assert 'max="13" value="13"' in page
        assert "<html" not in page
        assert "hx-trigger" not in page  # review: nothing left to follow

    def test_htmx_reloads_the_page_when_the_state_changed_under_it(self, alice, reviewed):
        response = client_for(alice).get(
            url("version_status", version_id=reviewed.public_id) + "?state=processing", HTTP_HX_REQUEST="true"
        )
        assert response["HX-Refresh"] == "true"

    def test_closing_without_uploads_says_why(self, alice, version):
        client = client_for(alice)
        response = client.post(url("version_process", version_id=version.public_id), follow=True)
        assert "Upload at least one file first." in html(response)
        version.refresh_from_db()
        assert version.state == VersionState.UPLOADING

    def test_a_failed_version_shows_the_reason_and_can_be_retried(self, alice, version, upload, settings):
        settings.SYNC_VALIDATE_MAX_BYTES = 0
        upload(version, jsonl(TICKETS) + b'{"text": broken}\n')
        services.version_process(actor=alice, version=version)
        drain()
        client = client_for(alice)
        page = html(client.get(url("version", version_id=version.public_id)))
        assert "Processing failed." in page
        assert "line 13" in page
        assert client.post(url("version_retry", version_id=version.public_id)).status_code == 302
        version.refresh_from_db()
        assert version.state == VersionState.PROCESSING

    def test_abandoning_an_open_version_keeps_the_reason(self, alice, version):
        response = client_for(alice).post(
            url("version_reject", version_id=version.public_id), {"reason": "wrong export"}
        )
        assert response.status_code == 302
        version.refresh_from_db()
        assert (version.state, version.failure_reason) == (VersionState.ABANDONED, "wrong export")

    def test_another_organisations_version_is_not_found(self, cora_admin, version):
        client = client_for(cora_admin)
        for name in ("version", "version_status", "report", "samples", "seal"):
            assert client.get(url(name, version_id=version.public_id)).status_code == 404, name
        for name in ("version_process", "version_reject", "findings_mark", "seal"):
            assert client.post(url(name, version_id=version.public_id)).status_code == 404, name

    def test_an_invited_contributor_uploads_but_the_owner_decides(self, alice, cora_admin, version):
        cora = cora_admin.memberships.get().organisation
        services.contributor_invite(actor=alice, version=version, organisation=cora)
        client = client_for(cora_admin)
        page = html(client.get(url("version", version_id=version.public_id)))
        assert "data-upload" in page
        assert "Acme Corpora reviews and seals it" in page
        assert "Close uploads and process" not in page
        assert client.post(url("version_process", version_id=version.public_id)).status_code == 404
        assert client.get(url("report", version_id=version.public_id)).status_code == 404


class TestReport:
    def test_redirects_to_the_version_until_processing_finished(self, alice, version):
        response = client_for(alice).get(url("report", version_id=version.public_id))
        assert response.status_code == 302
        assert response["Location"] == url("version", version_id=version.public_id)

    def test_draws_the_entity_counts_as_svg_bars(self, alice, reviewed):
        page = html(client_for(alice).get(url("report", version_id=reviewed.public_id)))
        counts = reviewed.report.counts
        assert counts["entities"]["EMAIL_ADDRESS"] == 13
        for slug in ("by-type", "by-field", "by-language"):
            assert f'data-chart="{slug}"' in page
        assert re.search(r'<text class="chart__label"[^>]*>EMAIL_ADDRESS</text>', page)
        assert re.search(r'<text class="chart__label"[^>]*>text</text>', page)
        assert re.search(r'<text class="chart__label"[^>]*>English</text>', page)
        assert "<script" not in page.split("<main", 1)[1]
        assert "maria.lopez" not in page  # counts only until samples are asked for

    def test_samples_are_for_members_and_each_viewing_is_audited(self, alice, reviewed):
        client = client_for(alice)
        decrypts = AuditEvent.objects.filter(action="custody.decrypt", details__what="report_samples")
        assert decrypts.count() == 0
        response = client.get(url("samples", version_id=reviewed.public_id), HTTP_HX_REQUEST="true")
        assert response.status_code == 200
        assert "no-store" in response["Cache-Control"]
        page = html(response)
        assert "maria.lopez0@example.com" in page
        assert "&lt;EMAIL_ADDRESS&gt;" in page
        assert "<html" not in page
        assert decrypts.count() == 1
        assert "<html" in html(client.get(url("samples", version_id=reviewed.public_id)))

    def test_viewers_see_counts_but_not_samples_and_decide_nothing(self, acme_viewer, reviewed):
        client = client_for(acme_viewer)
        page = html(client.get(url("report", version_id=reviewed.public_id)))
        assert 'data-chart="by-type"' in page
        assert "Show before/after samples" not in page
        assert 'name="drop"' not in page
        assert client.get(url("samples", version_id=reviewed.public_id)).status_code == 403
        duplicate = Finding.objects.get(version=reviewed, kind="exact_duplicate")
        assert (
            client.post(
                url("findings_mark", version_id=reviewed.public_id), {"drop": [duplicate.pk]}
            ).status_code
            == 403
        )
        assert client.post(url("seal", version_id=reviewed.public_id)).status_code == 403
        reviewed.refresh_from_db()
        assert reviewed.state == VersionState.REVIEW

    def test_findings_are_marked_to_drop_and_back(self, alice, reviewed):
        client = client_for(alice)
        duplicate = Finding.objects.get(version=reviewed, kind="exact_duplicate")
        assert f'name="drop" value="{duplicate.public_id}"' in html(
            client.get(url("report", version_id=reviewed.public_id))
        )
        response = client.post(
            url("findings_mark", version_id=reviewed.public_id),
            {
                "shown": [duplicate.public_id],
                "drop": [duplicate.public_id],
                "kind": "exact_duplicate",
                "page": "1",
            },
        )
        assert (
            response["Location"]
            == url("report", version_id=reviewed.public_id) + "?kind=exact_duplicate&page=1#findings"
        )
        duplicate.refresh_from_db()
        assert duplicate.drop is True
        client.post(url("findings_mark", version_id=reviewed.public_id), {"shown": [duplicate.public_id]})
        duplicate.refresh_from_db()
        assert duplicate.drop is False

    def test_all_findings_of_a_kind_are_dropped_at_once(self, alice, reviewed):
        client_for(alice).post(
            url("findings_mark", version_id=reviewed.public_id), {"drop_all_of_kind": "exact_duplicate"}
        )
        assert set(
            Finding.objects.filter(version=reviewed, kind="exact_duplicate").values_list("drop", flat=True)
        ) == {True}

    def test_another_versions_finding_is_refused(self, alice, reviewed, dataset):
        other = services.version_create(actor=alice, dataset=dataset)
        finding = Finding.objects.create(version=other, record_id=1, kind="empty", detail="x")
        response = client_for(alice).post(
            url("findings_mark", version_id=reviewed.public_id), {"drop": [finding.public_id]}
        )
        assert response.status_code == 404

    def test_the_findings_table_is_paginated(self, alice, reviewed, monkeypatch):
        from custody.pages import report

        Finding.objects.create(version=reviewed, record_id=5, kind="garbage", detail="mostly symbols")
        monkeypatch.setattr(report, "FINDINGS_PER_PAGE", 1)
        client = client_for(alice)
        total = Finding.objects.filter(version=reviewed).count()
        page = html(client.get(url("report", version_id=reviewed.public_id)))
        assert f"Page 1 of {total}" in page
        assert 'href="?page=2#findings"' in page
        only = html(client.get(url("report", version_id=reviewed.public_id) + "?kind=garbage"))
        assert "mostly symbols" in only
        assert 'rel="next"' not in only

    def test_sealing_is_confirmed_then_applies_the_drops(self, alice, reviewed):
        client = client_for(alice)
        duplicate = Finding.objects.get(version=reviewed, kind="exact_duplicate")
        services.findings_mark(actor=alice, version=reviewed, finding_ids=[duplicate.pk], drop=True)
        confirm = html(client.get(url("seal", version_id=reviewed.public_id)))
        assert "1 flagged record</strong> will be dropped, leaving 12 of the 13 records." in confirm
        reviewed.refresh_from_db()
        assert reviewed.state == VersionState.REVIEW  # looking is not sealing
        response = client.post(url("seal", version_id=reviewed.public_id), follow=True)
        reviewed.refresh_from_db()
        assert reviewed.state == VersionState.SEALED
        assert reviewed.records == 12
        page = html(response)
        assert f'<code class="hash" data-merkle-root>{reviewed.merkle_root}</code>' in page
        assert "is sealed" in page
        # A sealed version's report reads, but offers no more choices.
        report = html(client.get(url("report", version_id=reviewed.public_id)))
        assert 'name="drop"' not in report
        assert "dropped</span>" in report

    def test_the_seal_confirmation_is_only_for_a_version_in_review(self, alice, version):
        response = client_for(alice).get(url("seal", version_id=version.public_id))
        assert response.status_code == 302

    def test_rejecting_in_review_shreds_the_uploads(self, alice, reviewed):
        client_for(alice).post(url("version_reject", version_id=reviewed.public_id), {"reason": "too noisy"})
        reviewed.refresh_from_db()
        assert reviewed.state == VersionState.REJECTED
        assert not reviewed.contributions.filter(quarantine_shredded_at__isnull=True).exists()


class TestBarChart:
    def test_bars_scale_to_the_largest_count_and_come_largest_first(self):
        chart = bar_chart(slug="t", title="T", counts={"EMAIL_ADDRESS": 5, "PERSON": 10, "URL": 0})
        assert [(b.label, b.value) for b in chart.bars] == [("PERSON", 10), ("EMAIL_ADDRESS", 5)]
        assert chart.bars[0].length == 2 * chart.bars[1].length
        assert chart.bars[1].y > chart.bars[0].y
        assert chart.total == 15
        assert "PERSON: 10" in chart.description

    def test_the_rest_beyond_the_limit_is_one_other_bar(self):
        chart = bar_chart(slug="t", title="T", counts={f"T{i:02d}": 100 - i for i in range(20)}, limit=5)
        assert len(chart.bars) == 5
        assert chart.bars[-1].full_label == "Other (16 more)"
        assert chart.total == sum(100 - i for i in range(20))

    def test_labels_rename_and_long_labels_shorten(self):
        chart = bar_chart(slug="t", title="T", counts={"en": 2, "x" * 40: 1}, labels={"en": "English"})
        assert chart.bars[0].label == "English"
        assert chart.bars[1].label.endswith("…") and chart.bars[1].full_label == "x" * 40

    def test_nothing_found_is_an_empty_chart(self):
        assert bar_chart(slug="t", title="T", counts={}).empty

    def test_totals_by_key_sums_the_inner_counts(self):
        assert totals_by_key({"text": {"PERSON": 3, "URL": 1}, "title": {}}) == {"text": 4, "title": 0}
