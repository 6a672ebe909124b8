"""Submitting a job names its license by the reference an order returned, and retries are idempotent."""

from __future__ import annotations

import pytest

from common.models import IdempotencyRecord
from tests.grants import grant_for_test
from tests.training.conftest import job_body
from tests.training.test_submit import URL, assert_nothing_stored, assert_problem
from training.models import TrainingJob


@pytest.fixture
def bob_api(token_for, bob, bolt):
    return token_for(bob, bolt, ["read", "train"])


def post(client, body, key: str | None = None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return client.post(URL, body, format="json", **headers)


class TestLicenseReference:
    def test_the_license_reference_names_the_license_and_comes_back_on_the_job(self, bob_api, grant, tiny):
        response = post(bob_api, job_body(grant, tiny))
        assert response.status_code == 202, response.content
        body = response.json()
        assert body["license"] == grant.external_ref
        assert TrainingJob.objects.get().grant_id == grant.pk
        listed = bob_api.get(URL).json()["results"]
        assert [job["license"] for job in listed] == [grant.external_ref]

    def test_the_deprecated_grant_id_still_works(self, bob_api, grant, tiny):
        body = job_body(grant, tiny)
        del body["license"]
        response = post(bob_api, {**body, "grant": grant.public_id})
        assert response.status_code == 202, response.content
        assert response.json()["license"] == grant.external_ref
        assert response.json()["grant_id"] == grant.public_id

    @pytest.mark.parametrize("old", ["pk", "pk_string"])
    def test_an_old_integer_grant_id_answers_as_an_unknown_one(self, bob_api, grant, tiny, old):
        body = job_body(grant, tiny)
        del body["license"]
        integer = grant.pk if old == "pk" else str(grant.pk)
        old_answer = post(bob_api, {**body, "grant": integer})
        unknown_answer = post(bob_api, {**body, "grant": "gnt_0000000000000000"})
        problem = assert_problem(old_answer, 404, "training.license_not_found", "/grant")
        assert problem == unknown_answer.json()
        assert_nothing_stored()

    def test_both_license_and_grant_are_refused_pointing_at_license(self, bob_api, grant, tiny):
        body = {**job_body(grant, tiny), "grant": grant.public_id}
        problem = assert_problem(post(bob_api, body), 422, "training.license_required", "/license")
        assert "not grant as well" in problem["detail"]
        assert_nothing_stored()

    def test_neither_license_nor_grant_is_refused_pointing_at_license(self, bob_api, grant, tiny):
        body = job_body(grant, tiny)
        del body["license"]
        assert_problem(post(bob_api, body), 422, "training.license_required", "/license")
        assert_nothing_stored()

    def test_an_unknown_reference_is_not_found_pointing_at_license(self, bob_api, grant, tiny):
        body = {**job_body(grant, tiny), "license": "lic_doesnotexist"}
        assert_problem(post(bob_api, body), 404, "training.license_not_found", "/license")
        assert_nothing_stored()

    def test_another_organisations_reference_is_not_found(self, bob_api, sealed_version, tiny, acme):
        acme.is_trainer = True
        acme.save()
        theirs = grant_for_test(sealed_version, acme)
        assert_problem(post(bob_api, job_body(theirs, tiny)), 404, "training.license_not_found", "/license")
        assert_nothing_stored()


class TestIdempotencyKey:
    def test_a_retry_with_the_same_key_and_body_replays_the_same_job(self, bob_api, grant, tiny):
        first = post(bob_api, job_body(grant, tiny), key="submit-0001")
        again = post(bob_api, job_body(grant, tiny), key="submit-0001")
        assert first.status_code == again.status_code == 202, again.content
        assert again.json() == first.json()
        assert TrainingJob.objects.count() == 1
        grant.refresh_from_db()
        assert grant.jobs_reserved == 1  # the retry spent no second job of the license

    def test_the_same_key_with_another_body_is_refused(self, bob_api, grant, tiny):
        assert post(bob_api, job_body(grant, tiny), key="submit-0002").status_code == 202
        other = job_body(grant, tiny, purpose="research", hyperparameters={"epochs": 1, "seed": 4})
        assert_problem(post(bob_api, other, key="submit-0002"), 422, "idempotency.key_reused")
        assert TrainingJob.objects.count() == 1

    def test_a_refused_submit_frees_its_key_for_a_corrected_retry(self, bob_api, grant, tiny):
        bad = {**job_body(grant, tiny), "license": "lic_doesnotexist"}
        assert_problem(post(bob_api, bad, key="submit-0003"), 404, "training.license_not_found")
        assert not IdempotencyRecord.objects.exists()
        assert post(bob_api, job_body(grant, tiny), key="submit-0004").status_code == 202

    def test_a_malformed_key_is_refused_pointing_at_the_header(self, bob_api, grant, tiny):
        assert_problem(
            post(bob_api, job_body(grant, tiny), key="short"),
            422,
            "idempotency.key_invalid",
            "/headers/Idempotency-Key",
        )
        assert_nothing_stored()

    def test_without_a_key_each_submit_is_a_new_job(self, bob_api, grant, tiny):
        assert post(bob_api, job_body(grant, tiny)).status_code == 202
        assert post(bob_api, job_body(grant, tiny)).status_code == 202
        assert TrainingJob.objects.count() == 2
