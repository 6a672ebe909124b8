"""Submitting valuation jobs: who may, on what, and problem+json on bad input (nothing runs here;
tests/training/test_valuation_launcher.py runs them, tests/training/test_worker_valuation.py through
the live worker)."""

from __future__ import annotations

from typing import Any

import pytest

from custody.models import Grant, GrantJob, GrantPurpose
from tests.grants import grant_for_test
from training.job_templates import TEMPLATES
from training.models import JobState, TrainingJob

URL = "/api/v1/training/valuations"
BODY: dict[str, Any] = {"label_field": "kind", "valuation": {"k": 3, "min_group": 10}}


def test_the_template_is_listed_without_training_knobs(token_for, bob, bolt) -> None:
    info = TEMPLATES["valuation"].as_dict()
    assert set(info["hyperparameters"]) == {"batch_size", "max_seq_len", "seed"}
    assert info["supports_dp"] is False and info["dp"] is None and info["needs_label_field"] is True
    assert info["valuation"]["flag_margin"]["default"] == 0.06
    listed = token_for(bob, bolt, ["read"]).get("/api/v1/training/templates").json()["results"]
    assert "valuation" in [t["name"] for t in listed]


def test_the_owner_queues_a_valuation_under_the_versions_valuation_grant(
    sealed_version, token_for, alice, acme
):
    response = token_for(alice, acme, ["provide"]).post(
        URL, {**BODY, "version_id": sealed_version.public_id}, format="json"
    )
    assert response.status_code == 202, response.content
    job = TrainingJob.objects.get(public_id=response.json()["id"])
    assert job.state == JobState.QUEUED and job.organisation == acme and job.template == "valuation"
    grant = job.grant
    assert (
        grant.purpose == GrantPurpose.VALUATION
        and grant.licensee is None
        and grant.version_id == sealed_version.pk
    )
    assert GrantJob.objects.filter(grant=grant, consumer_ref=job.consumer_ref).exists()
    assert job.spec["valuation"] == {"k": 3, "min_group": 10} and job.tokens_planned == 0
    assert job.epsilon_reserved is None and not job.dp_enabled
    # One valuation grant per version, reused.
    again = token_for(alice, acme, ["provide"]).post(
        URL, {**BODY, "version_id": sealed_version.public_id}, format="json"
    )
    assert TrainingJob.objects.get(public_id=again.json()["id"]).grant_id == grant.pk
    assert Grant.objects.filter(version=sealed_version, purpose=GrantPurpose.VALUATION).count() == 1


def _problem(response, status: int, pointer: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert pointer in [e["pointer"] for e in body.get("errors", [])], body
    return body


@pytest.mark.parametrize(
    ("change", "pointer"),
    [
        ({"valuation": {"k": 0}}, "/valuation/k"),
        ({"valuation": {"min_group": 2}}, "/valuation/min_group"),
        ({"valuation": {"flag_margin": 3}}, "/valuation/flag_margin"),
        ({"hyperparameters": {"epochs": 3}}, "/hyperparameters/epochs"),
        ({"hyperparameters": {"max_seq_len": 4}}, "/hyperparameters/max_seq_len"),
        ({"label_field": ""}, "/label_field"),
    ],
)
def test_bad_settings_are_refused_with_a_pointer(
    sealed_version, token_for, alice, acme, change, pointer
) -> None:
    body = {**BODY, "version_id": sealed_version.public_id, **change}
    _problem(token_for(alice, acme, ["provide"]).post(URL, body, format="json"), 422, pointer)
    assert not TrainingJob.objects.exists()


def test_name_one_target(sealed_version, grant, token_for, alice, acme) -> None:
    client = token_for(alice, acme, ["provide"])
    _problem(client.post(URL, BODY, format="json"), 422, "/version_id")
    both = {**BODY, "version_id": sealed_version.public_id, "license": grant.external_ref}
    _problem(client.post(URL, both, format="json"), 422, "/version_id")
    _problem(client.post(URL, {**BODY, "version_id": 7}, format="json"), 422, "/version_id")


def test_only_the_owners_admins_value_its_version(
    sealed_version, token_for, acme, acme_member, bob, bolt
) -> None:
    refused = token_for(acme_member, acme, ["provide"]).post(
        URL, {**BODY, "version_id": sealed_version.public_id}, format="json"
    )
    assert refused.status_code == 403 and refused.json()["code"] == "common.role_insufficient"
    # Another organisation's version is not found, the same as no version.
    other = token_for(bob, bolt, ["train"]).post(
        URL, {**BODY, "version_id": sealed_version.public_id}, format="json"
    )
    _problem(other, 404, "/version_id")
    missing = token_for(bob, bolt, ["train"]).post(
        URL, {**BODY, "version_id": "dsv_0000000000000000"}, format="json"
    )
    assert missing.json()["code"] == other.json()["code"] == "training.version_not_found"
    assert not TrainingJob.objects.exists()


def test_a_license_that_does_not_name_the_template_refuses_it(grant, token_for, bob, bolt) -> None:
    # The training fixtures' license names causal_lm, causal_lm_lora and seq_classification only.
    response = token_for(bob, bolt, ["train"]).post(
        URL, {**BODY, "license": grant.external_ref}, format="json"
    )
    body = _problem(response, 422, "/template")
    assert body["code"] == "training.template_not_permitted"


def test_a_dp_license_admits_a_valuation_only_when_it_names_it(sealed_version, token_for, bob, bolt) -> None:
    client = token_for(bob, bolt, ["train"])
    silent = grant_for_test(sealed_version, bolt, dp_required=True)
    response = client.post(URL, {**BODY, "license": silent.external_ref}, format="json")
    assert "requires DP" in _problem(response, 422, "/template")["detail"]
    named = grant_for_test(sealed_version, bolt, dp_required=True, job_templates=["valuation"])
    accepted = client.post(URL, {**BODY, "license": named.external_ref}, format="json")
    assert accepted.status_code == 202, accepted.content


def test_a_trainers_validation_set_must_be_its_own(sealed_version, token_for, bob, bolt) -> None:
    grant = grant_for_test(sealed_version, bolt, job_templates=["valuation"])
    # The licensed version is Acme's, not Bolt's: it cannot serve as Bolt's labelled set.
    body = {**BODY, "license": grant.external_ref, "validation_version_id": sealed_version.public_id}
    _problem(token_for(bob, bolt, ["train"]).post(URL, body, format="json"), 404, "/validation_version_id")


def test_the_owner_cannot_value_a_version_still_uploading(version_uploading, token_for, alice, acme) -> None:
    response = token_for(alice, acme, ["provide"]).post(
        URL, {**BODY, "version_id": version_uploading.public_id}, format="json"
    )
    assert response.status_code == 409 and response.json()["code"] == "training.version_unavailable"


@pytest.fixture
def version_uploading(alice, dataset):
    from custody import services as custody

    return custody.version_create(actor=alice, dataset=dataset)


def test_the_trainers_job_form_submits_a_valuation(sealed_version, bob, bolt) -> None:
    from django.test import Client

    from tests.training.test_job_page import form_data
    from training.models import BaseModel

    grant = grant_for_test(sealed_version, bolt, purposes=["research"], job_templates=["valuation"])
    client = Client()
    client.force_login(bob)
    minilm = BaseModel.objects.get(name="minilm-l6", owner=None)
    response = client.post(
        "/training/jobs/new/", form_data(grant, minilm, template="valuation", label_field="kind")
    )
    job = TrainingJob.objects.get()
    assert response.status_code == 302 and job.template == "valuation" and job.grant_id == grant.pk
    # The form's training fields (epochs, learning rate) are not sent to a valuation.
    assert set(job.request["hyperparameters"]) == {"batch_size", "max_seq_len", "seed"}


def test_a_version_over_the_per_job_limit_is_refused(
    sealed_version, token_for, alice, acme, settings
) -> None:
    settings.TRAINING_MAX_RECORDS = 10  # the sealed version holds 30 records
    response = token_for(alice, acme, ["provide"]).post(
        URL, {**BODY, "version_id": sealed_version.public_id}, format="json"
    )
    assert _problem(response, 422, "/version_id")["code"] == "training.job_too_large"
    assert not TrainingJob.objects.exists()
