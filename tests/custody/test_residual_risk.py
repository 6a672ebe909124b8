"""The residual-risk estimate: the strict detector reads a sample after desensitization; sealing a
version with a high estimate needs the provider's confirmation (portal and API)."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from common.models import AuditEvent, User
from custody import services
from custody.desensitize.strict import strict_scan
from custody.exceptions import NotPermitted, ResidualRiskUnconfirmed
from custody.models import DatasetVersion, VersionState
from custody.services.residual import wilson_interval
from tests.custody.conftest import drain, jsonl

pytestmark = pytest.mark.django_db

# A policy that replaces e-mail addresses but keeps every name: the desensitizer's
# threshold is out of the NER model's reach, so the strict detector finds the names.
NAMES_KEPT = {"entities": ["PERSON", "EMAIL_ADDRESS"], "threshold": 0.99}
TICKETS = [
    {"text": f"Ticket {i}: Maria Lopez wrote from maria.lopez{i}@example.com about the printer."}
    for i in range(10)
]


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def leaky(alice, acme, upload) -> DatasetVersion:
    """A version in review whose records still name Maria Lopez (and no longer hold her e-mail)."""
    dataset = services.dataset_create(actor=alice, organisation=acme, name="Leaky", policy=NAMES_KEPT)
    version = services.version_create(actor=alice, dataset=dataset)
    upload(version, jsonl(TICKETS))
    services.version_process(actor=alice, version=version)
    drain()
    version.refresh_from_db()
    assert version.state == VersionState.REVIEW
    return version


class TestStrictScan:
    def test_finds_names_places_and_organisations_the_operators_left(self):
        english, chinese = strict_scan(
            ["I met john smith in Paris with Acme Corp.", "请联系王小明，他住在北京市朝阳区。"]
        )
        found = {
            (s.entity_type, "I met john smith in Paris with Acme Corp."[s.start : s.end]) for s in english
        }
        assert ("PERSON", "john smith") in found
        assert ("LOCATION", "Paris") in found
        assert {s.entity_type for s in chinese} >= {"PERSON", "LOCATION"}

    def test_what_the_operators_wrote_does_not_count(self):
        tagged, pseudonym, masked = strict_scan(
            [
                "Call <PERSON> at <PHONE_NUMBER>.",
                "Ask <PERSON_1a2b3c4d> today.",
                "Card ************4242 is on file.",
            ]
        )
        assert tagged == pseudonym == masked == []

    def test_a_surrogate_is_ignored_at_its_offsets_only(self):
        text = "Ask Jonathan Miller, or Mary Jones."
        surrogate = (4, 19)  # "Jonathan Miller", written by the surrogate operator
        (ignored,) = strict_scan([text], ignore=[[surrogate]])
        assert [text[s.start : s.end] for s in ignored] == ["Mary Jones"]

    def test_a_name_beside_a_placeholder_still_counts(self):
        text = "Contact Dr. <PERSON_1a2b3c4d> or Mary Jones."
        (found,) = strict_scan([text])
        assert "Mary Jones" in [text[s.start : s.end] for s in found]

    def test_dates_are_not_its_business_and_types_can_be_limited(self):
        text = "Maria Lopez wrote on 3 March 2024 from maria@example.com."
        (everything,) = strict_scan([text])
        assert "DATE_TIME" not in {s.entity_type for s in everything}
        (emails,) = strict_scan([text], entities=["EMAIL_ADDRESS"])
        assert {s.entity_type for s in emails} == {"EMAIL_ADDRESS"}


def test_the_wilson_interval_is_the_textbook_one():
    low, high = wilson_interval(10, 100)
    assert (round(low, 4), round(high, 4)) == (0.0552, 0.1744)
    low, high = wilson_interval(0, 200)
    assert low == 0.0 and round(high, 4) == 0.0188


class TestEstimate:
    def test_a_clean_version_has_a_low_estimate_and_seals_without_asking(self, alice, sealed_version):
        estimate = services.version_residual_estimate(version=sealed_version)
        assert estimate is not None
        assert estimate.sampled == 30
        assert estimate.any.hits == 0 and not estimate.needs_confirmation
        event = AuditEvent.objects.get(action="custody.version_seal")
        assert event.details["residual"] == {"sampled": 30, "rate": 0.0, "confirmed": False}

    def test_names_left_in_clear_are_estimated_per_type(self, leaky):
        estimate = services.version_residual_estimate(version=leaky)
        assert estimate is not None and estimate.sampled == 10
        person = next(r for r in estimate.rows if r.entity_type == "PERSON")
        assert person.hits == 10 and person.rate == 1.0
        assert person.low < person.rate <= person.high
        # The e-mail addresses were replaced by tags, which do not count.
        assert "EMAIL_ADDRESS" not in {r.entity_type for r in estimate.rows}
        assert estimate.needs_confirmation

    def test_examples_are_for_the_provider_and_audited(self, alice, acme_viewer, leaky):
        decrypts = AuditEvent.objects.filter(action="custody.decrypt", details__what="residual_examples")
        examples = services.residual_examples(actor=alice, version=leaky, entity_type="PERSON")
        assert examples and decrypts.count() == 1
        first = examples[0]
        start, end, kind = first["hits"][0]
        assert (first["text"][start:end], kind) == ("Maria Lopez", "PERSON")
        assert "<EMAIL_ADDRESS>" in first["text"]
        assert services.residual_examples(actor=alice, version=leaky, entity_type="IBAN_CODE") == []
        with pytest.raises(NotPermitted):
            services.residual_examples(actor=acme_viewer, version=leaky)


class TestSealNeedsConfirmation:
    def test_the_service_refuses_then_seals_when_confirmed(self, alice, leaky):
        with pytest.raises(ResidualRiskUnconfirmed) as excinfo:
            services.version_seal(actor=alice, version=leaky)
        assert excinfo.value.code == "custody.residual_risk_unconfirmed"
        leaky.refresh_from_db()
        assert leaky.state == VersionState.REVIEW
        sealed = services.version_seal(actor=alice, version=leaky, confirm_residual_risk=True)
        assert sealed.state == VersionState.SEALED
        event = AuditEvent.objects.get(action="custody.version_seal")
        assert event.details["residual"]["confirmed"] is True
        assert event.details["residual"]["rate"] == 1.0

    def test_the_api_answers_409_problem_json_until_confirmed(self, alice, acme, token_for, leaky):
        client = token_for(alice, acme, ["read", "provide"])
        report = client.get(f"/api/v1/versions/{leaky.public_id}/report").json()
        assert report["residual"]["needs_confirmation"] is True
        assert report["residual"]["interval"] == "wilson-95"
        assert report["residual"]["any"]["records"] == 10
        refused = client.post(f"/api/v1/versions/{leaky.public_id}/seal", {}, format="json")
        assert refused.status_code == 409
        assert refused["Content-Type"].startswith("application/problem+json")
        assert refused.json()["code"] == "custody.residual_risk_unconfirmed"
        sealed = client.post(
            f"/api/v1/versions/{leaky.public_id}/seal", {"confirm_residual_risk": True}, format="json"
        )
        assert sealed.status_code == 200 and sealed.json()["state"] == "sealed"

    def test_the_api_lists_the_examples(self, alice, acme, token_for, leaky):
        client = token_for(alice, acme, ["read"])
        response = client.get(f"/api/v1/versions/{leaky.public_id}/report/residual?entity_type=PERSON")
        assert response.status_code == 200
        assert response.json()[0]["entities"] == ["PERSON"]

    def test_the_portal_shows_the_estimate_and_asks_for_the_checkbox(self, alice, leaky):
        client = client_for(alice)
        report = client.get(
            reverse("custody:report", kwargs={"version_id": leaky.public_id})
        ).content.decode()
        assert "What may be left" in report and "95% Wilson score interval" in report
        assert "Maria Lopez" not in report  # counts only until the examples are asked for
        examples = client.get(
            reverse("custody:residual", kwargs={"version_id": leaky.public_id}), HTTP_HX_REQUEST="true"
        )
        assert "no-store" in examples["Cache-Control"]
        assert '<mark class="sample__span sample__span--residual" title="PERSON">Maria Lopez' in (
            examples.content.decode()
        )
        seal_url = reverse("custody:seal", kwargs={"version_id": leaky.public_id})
        assert 'name="confirm_residual_risk"' in client.get(seal_url).content.decode()
        refused = client.post(seal_url)
        assert refused.status_code == 409
        assert "confirm to seal anyway" in refused.content.decode()
        assert client.post(seal_url, {"confirm_residual_risk": "on"}).status_code == 302
        leaky.refresh_from_db()
        assert leaky.state == VersionState.SEALED
