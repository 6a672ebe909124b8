"""The portal's job form submits a mixed job (issue 17 item 3): several licenses with weights,
and each refusal on the row of the license it is about.

Through the page and the database: the form's own checks (a license chosen twice, a weight
missing, a purpose a second license does not permit) and the service's combined-terms rule
(``/licenses/<i>/terms/...`` pointers) land on license i's fields; a valid mix queues one job
with a component per license, weighted as asked.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from custody.models import DatasetVersion, Grant
from tests.grants import grant_for_test
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from tests.training.test_job_page import TERMS, form_data
from training.models import BaseModel, JobGrant, TrainingJob

URL = "/training/jobs/new/"


@pytest.fixture
def versions(sealed_rows, acme) -> list[DatasetVersion]:  # noqa: F811
    return [sealed_rows(tokens={acme: 7_000}), sealed_rows(tokens={acme: 5_000})]


@pytest.fixture
def grants(versions, bolt) -> list[Grant]:
    return [grant_for_test(v, bolt, **TERMS) for v in versions]


@pytest.fixture
def bob_client(bob) -> Client:
    client = Client()
    client.force_login(bob)
    return client


def mixed(grants: list[Grant], tiny: BaseModel, weights: list[str], **overrides: Any) -> dict[str, Any]:
    data = form_data(grants[0], tiny, weight=weights[0], grant_2=grants[1].public_id, weight_2=weights[1])
    data.update(overrides)
    return data


def errors(response) -> dict[str, list[str]]:
    assert response.status_code == 200
    return {name: list(messages) for name, messages in response.context["form"].errors.items()}


class TestMixedJobForm:
    def test_the_form_offers_a_second_license_and_weights(self, bob_client, grants):
        html = bob_client.get(URL).content.decode()
        assert 'name="weight"' in html and 'name="grant_2"' in html and 'name="weight_2"' in html
        assert "Mix with a second license" in html and "No other license" in html

    def test_a_valid_mix_queues_one_job_weighted_as_asked(self, bob_client, grants, tiny):
        response = bob_client.post(URL, mixed(grants, tiny, ["7", "3"]))
        job = TrainingJob.objects.get()
        assert response.status_code == 302 and response["Location"] == f"/training/jobs/{job.public_id}/"
        components = list(
            JobGrant.objects.filter(job=job).order_by("position").values_list("grant", "weight_bps")
        )
        assert components == [(grants[0].pk, 7000), (grants[1].pk, 3000)]

    def test_without_a_second_license_the_job_trains_under_one(self, bob_client, grants, tiny):
        """Negative control: the weight alone does not make a mix."""
        response = bob_client.post(URL, form_data(grants[0], tiny, weight="5"))
        assert response.status_code == 302
        assert TrainingJob.objects.get().grant_id == grants[0].pk and not JobGrant.objects.exists()

    def test_a_missing_weight_and_a_license_twice_are_refused_on_their_rows(self, bob_client, grants, tiny):
        found = errors(bob_client.post(URL, mixed(grants, tiny, ["7", ""])))
        assert (
            list(found) == ["weight_2"] and "a mix reads each license in proportion" in found["weight_2"][0]
        )
        found = errors(bob_client.post(URL, mixed(grants, tiny, ["7", "3"], grant_2=grants[0].public_id)))
        assert list(found) == ["grant_2"] and "is already in this mix" in found["grant_2"][0]
        assert not TrainingJob.objects.exists()

    def test_a_purpose_the_second_license_does_not_permit_is_on_its_row(
        self, bob_client, versions, bolt, tiny
    ):
        first = grant_for_test(versions[0], bolt, **TERMS)
        second = grant_for_test(versions[1], bolt, **{**TERMS, "purposes": ["commercial"]})
        found = errors(bob_client.post(URL, mixed([first, second], tiny, ["1", "1"])))
        assert list(found) == ["grant_2"]
        assert (
            "does not permit non-commercial research; it permits: commercial products" in found["grant_2"][0]
        )
        assert not TrainingJob.objects.exists()

    def test_the_combined_terms_refusals_land_on_each_licenses_row(self, bob_client, versions, bolt, tiny):
        first = grant_for_test(versions[0], bolt, **{**TERMS, "max_epochs": 1})
        second = grant_for_test(versions[1], bolt, **{**TERMS, "max_epochs": 1, "exclusive_use": True})
        found = errors(bob_client.post(URL, mixed([first, second], tiny, ["1", "1"], epochs="2")))
        assert set(found) == {"grant", "grant_2"}
        assert any("at most 1 epochs; 2 asked" in m for m in found["grant"])
        assert any("at most 1 epochs; 2 asked" in m for m in found["grant_2"])
        assert any("exclusive use" in m for m in found["grant_2"])
        assert not TrainingJob.objects.exists()
