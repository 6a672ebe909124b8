"""Before/after samples: more than the first few, filtered by language and entity type, paged,
with the replaced spans' offsets (highlighted on the page); every viewing audited."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from common.models import AuditEvent, User
from custody import services
from custody.models import DatasetVersion
from tests.custody.conftest import drain, jsonl

pytestmark = pytest.mark.django_db

RECORDS = [
    *({"text": f"Write to maria.lopez{i}@example.com about ticket {i}."} for i in range(8)),
    *({"text": f"Call 415-555-01{i:02d} about ticket {i}."} for i in range(4)),
    *({"text": f"请拨打手机13812345{i:03d}，工单{i}。"} for i in range(6)),
]


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def reviewed(alice, version, upload) -> DatasetVersion:
    upload(version, jsonl(RECORDS))
    services.version_process(actor=alice, version=version)
    drain()
    version.refresh_from_db()
    return version


def decrypts():
    return AuditEvent.objects.filter(action="custody.decrypt", details__what="report_samples")


class TestSamplesService:
    def test_every_language_and_type_is_sampled_with_its_offsets(self, alice, reviewed):
        page = services.report_samples_page(actor=alice, version=reviewed)
        assert page.total > 3  # not the first three any more
        assert set(page.languages) >= {"en", "zh"}
        assert set(page.entity_types) >= {"EMAIL_ADDRESS", "PHONE_NUMBER"}
        for sample in page.samples:
            for (start, end, kind), (after_start, after_end, after_kind) in zip(
                sample["before_spans"], sample["after_spans"], strict=True
            ):
                assert kind == after_kind
                # The default policy tags: the replaced span reads <TYPE> after.
                assert sample["after"][after_start:after_end] == f"<{kind}>"
                assert sample["before"][start:end] not in sample["after"]

    def test_filters_by_language_and_entity_type(self, alice, reviewed):
        chinese = services.report_samples_page(actor=alice, version=reviewed, language="zh")
        assert chinese.samples and all(s["language"] == "zh" for s in chinese.samples)
        assert all("13812345" in s["before"] for s in chinese.samples)
        emails = services.report_samples_page(actor=alice, version=reviewed, entity_type="EMAIL_ADDRESS")
        assert emails.samples and all("EMAIL_ADDRESS" in s["entities"] for s in emails.samples)
        assert services.report_samples_page(actor=alice, version=reviewed, entity_type="IBAN_CODE").total == 0

    def test_pages_and_audits_what_was_shown(self, alice, reviewed):
        everything = services.report_samples_page(actor=alice, version=reviewed)
        second = services.report_samples_page(actor=alice, version=reviewed, offset=2, limit=2)
        assert [s["record_id"] for s in second.samples] == [s["record_id"] for s in everything.samples[2:4]]
        assert second.total == everything.total
        assert decrypts().last().details["count"] == 2


class TestSamplesPage:
    def test_filters_pages_and_highlights(self, alice, reviewed):
        client = client_for(alice)
        url = reverse("custody:samples", kwargs={"version_id": reviewed.public_id})
        response = client.get(url, {"language": "zh"}, HTTP_HX_REQUEST="true")
        assert response.status_code == 200 and "no-store" in response["Cache-Control"]
        page = response.content.decode()
        assert '<mark class="sample__span" title="PHONE_NUMBER">1381234500' in page
        assert '<mark class="sample__span" title="PHONE_NUMBER">&lt;PHONE_NUMBER&gt;</mark>' in page
        assert "maria.lopez" not in page
        assert '<option value="zh" selected>' in page
        first = client.get(url).content.decode()
        assert "Page 1 of" in first and "page=2" in first
        assert decrypts().count() == 2

    @pytest.mark.parametrize("page", ["²", "٣", "9" * 30, "-1", "x"])
    def test_a_page_number_that_is_not_one_shows_the_first_page(self, alice, reviewed, page):
        url = reverse("custody:samples", kwargs={"version_id": reviewed.public_id})
        response = client_for(alice).get(url, {"page": page})
        assert response.status_code == 200
        assert "Page 1 of" in response.content.decode()

    def test_viewers_get_403(self, acme_viewer, reviewed):
        url = reverse("custody:samples", kwargs={"version_id": reviewed.public_id})
        assert client_for(acme_viewer).get(url).status_code == 403
        assert decrypts().count() == 0


def test_the_api_filters_and_pages(alice, acme, token_for, reviewed):
    client = token_for(alice, acme, ["read"])
    url = f"/api/v1/versions/{reviewed.public_id}/report/samples"
    response = client.get(url, {"entity_type": "EMAIL_ADDRESS", "limit": 2})
    assert response.status_code == 200
    body = response.json()
    assert len(body) == 2 and int(response["X-Total-Count"]) >= 2
    assert all("EMAIL_ADDRESS" in s["entities"] and s["after_spans"] for s in body)
    bad = client.get(url, {"limit": 0})
    assert bad.status_code in (400, 422) and bad["Content-Type"].startswith("application/problem+json")
