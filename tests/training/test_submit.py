"""Submitting jobs through the API: spec errors with pointers, and every license rule with its code."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.utils import timezone

from common.models import Notification, WorkItem
from custody import services as custody
from custody.models import GrantJob, PrivacyBudgetEntry
from tests.grants import grant_for_test
from tests.training.conftest import TINY_HP, drain, job_body, jsonl
from training import services
from training.exceptions import Conflict
from training.models import BaseModel, BudgetHold, JobState, TrainingJob

URL = "/api/v1/training/jobs"


@pytest.fixture
def bob_api(token_for, bob, bolt):
    return token_for(bob, bolt, ["read", "train"])


def post(client, body):
    return client.post(URL, body, format="json")


def assert_problem(response, status: int, code: str, pointer: str | None = None) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    if pointer is not None:
        assert pointer in [e["pointer"] for e in body["errors"]], body
    return body


def assert_nothing_stored() -> None:
    assert TrainingJob.objects.count() == 0
    assert GrantJob.objects.count() == 0
    assert PrivacyBudgetEntry.objects.count() == 0
    assert not WorkItem.objects.filter(kind="training.job").exists()


class TestSubmit:
    def test_queues_the_job_counts_it_on_the_license_and_notifies(self, bob_api, grant, tiny, sealed_version):
        response = post(bob_api, job_body(grant, tiny))
        assert response.status_code == 202, response.content
        body = response.json()
        assert body["state"] == "queued"
        assert body["dataset_version_id"] == sealed_version.public_id
        assert body["tokens_planned"] == sealed_version.tokens * TINY_HP["epochs"]
        job = TrainingJob.objects.get(public_id=body["id"])
        assert job.spec["base"] == {"kind": "builtin", "name": "gpt2-tiny"}
        assert job.spec["gate"] == {"max_exposure": 20.0}
        assert WorkItem.objects.filter(kind="training.job", ref=str(job.pk), queue="training").exists()
        grant.refresh_from_db()
        assert grant.jobs_reserved == 1
        assert Notification.objects.filter(organisation=job.organisation, kind="job.queued").exists()
        assert job.purpose == "research"

    def test_lists_and_shows_only_the_organisations_jobs(self, bob_api, grant, tiny, token_for, carol):
        job_id = post(bob_api, job_body(grant, tiny)).json()["id"]
        listed = bob_api.get(URL).json()["results"]
        assert [j["id"] for j in listed] == [job_id]
        detail = bob_api.get(f"{URL}/{job_id}").json()
        assert [e["kind"] for e in detail["events"]] == ["queued"]

    def test_a_token_without_the_train_scope_is_refused(self, token_for, bob, bolt, grant, tiny):
        client = token_for(bob, bolt, ["read"])
        assert_problem(post(client, job_body(grant, tiny)), 403, "common.token_scope_missing")
        assert_nothing_stored()

    def test_a_provider_organisation_cannot_submit(self, token_for, alice, acme, grant, tiny):
        client = token_for(alice, acme, ["train"])
        assert_problem(post(client, job_body(grant, tiny)), 403, "training.not_trainer")

    def test_another_organisations_license_is_not_found(self, bob_api, sealed_version, tiny, acme):
        acme.is_trainer = True
        acme.save()
        theirs = grant_for_test(sealed_version, acme)
        assert_problem(post(bob_api, job_body(theirs, tiny)), 404, "training.license_not_found")
        assert_nothing_stored()


class TestSpecErrors:
    @pytest.mark.parametrize(
        ("hp", "pointer"),
        [
            ({"learning_rate": 5}, "/hyperparameters/learning_rate"),
            ({"epochs": 0}, "/hyperparameters/epochs"),
            ({"batch_size": "eight"}, "/hyperparameters/batch_size"),
            ({"warp_speed": 9}, "/hyperparameters/warp_speed"),
        ],
    )
    def test_a_bad_hyperparameter_points_at_its_field(self, bob_api, grant, tiny, hp, pointer):
        body = job_body(grant, tiny, hyperparameters={**TINY_HP, **hp})
        assert_problem(post(bob_api, body), 422, "training.spec_invalid", pointer)
        assert_nothing_stored()

    def test_a_base_of_the_wrong_kind_points_at_the_base(self, bob_api, grant):
        minilm = BaseModel.objects.get(name="minilm-l6")
        assert_problem(post(bob_api, job_body(grant, minilm)), 422, "training.spec_invalid", "/base")

    def test_an_unknown_base_points_at_the_base(self, bob_api, grant, tiny):
        body = {**job_body(grant, tiny), "base": "base_0000000000000000"}
        assert_problem(post(bob_api, body), 422, "training.base_not_found", "/base")

    def test_classification_needs_a_label_field(self, bob_api, grant):
        minilm = BaseModel.objects.get(name="minilm-l6")
        body = job_body(grant, minilm, template="seq_classification")
        assert_problem(post(bob_api, body), 422, "training.spec_invalid", "/label_field")

    def test_dp_on_a_template_without_dp_points_at_dp(self, bob_api, grant, tiny):
        body = job_body(grant, tiny, dp={"enabled": True, "target_epsilon": 1.0})
        assert_problem(post(bob_api, body), 422, "training.spec_invalid", "/dp/enabled")
        assert_nothing_stored()

    def test_a_request_that_is_not_an_object_is_refused(self, bob_api):
        response = bob_api.post(URL, [1, 2], format="json")
        assert response.status_code in (400, 422)
        assert_nothing_stored()


class TestLicenseRules:
    def test_template_not_permitted(self, bob_api, sealed_version, bolt, tiny, license_terms):
        grant = grant_for_test(sealed_version, bolt, **{**license_terms, "job_templates": ["causal_lm_lora"]})
        assert_problem(
            post(bob_api, job_body(grant, tiny)), 422, "training.template_not_permitted", "/template"
        )
        assert_nothing_stored()

    def test_purpose_not_permitted(self, bob_api, grant, tiny):
        body = job_body(grant, tiny, purpose="advertising")
        assert_problem(post(bob_api, body), 422, "training.purpose_not_permitted", "/purpose")

    def test_epochs_exceeded(self, bob_api, grant, tiny):
        body = job_body(grant, tiny, hyperparameters={**TINY_HP, "epochs": 4})
        assert_problem(post(bob_api, body), 422, "training.epochs_exceeded", "/hyperparameters/epochs")
        assert_nothing_stored()

    def test_tokens_exceeded_counts_earlier_jobs(self, bob_api, sealed_version, bolt, tiny, license_terms):
        cap = sealed_version.tokens * 3
        grant = grant_for_test(sealed_version, bolt, **{**license_terms, "max_tokens": cap})
        two = {**TINY_HP, "epochs": 2}
        assert post(bob_api, job_body(grant, tiny, hyperparameters=two)).status_code == 202
        body = assert_problem(
            post(bob_api, job_body(grant, tiny, hyperparameters=two)), 422, "training.tokens_exceeded"
        )
        assert f"{sealed_version.tokens:,} of {cap:,} left" in body["detail"]
        assert TrainingJob.objects.count() == 1

    def test_license_exhausted(self, bob_api, sealed_version, bolt, tiny, license_terms):
        grant = grant_for_test(sealed_version, bolt, **{**license_terms, "max_jobs": 1})
        assert post(bob_api, job_body(grant, tiny)).status_code == 202
        assert_problem(post(bob_api, job_body(grant, tiny)), 409, "training.license_exhausted")
        assert TrainingJob.objects.count() == 1

    def test_license_expired(self, bob_api, sealed_version, bolt, tiny, license_terms):
        past = (timezone.now() - timedelta(minutes=1)).isoformat()
        grant = grant_for_test(sealed_version, bolt, **{**license_terms, "expires_at": past})
        assert_problem(post(bob_api, job_body(grant, tiny)), 409, "training.license_expired")
        assert_nothing_stored()

    def test_license_revoked(self, bob_api, grant, tiny):
        custody.grant_revoke(grant=grant, reason="test")
        assert_problem(post(bob_api, job_body(grant, tiny)), 409, "training.license_revoked")

    def test_dp_required_by_the_license(self, bob_api, sealed_version, bolt, tiny, license_terms):
        grant = grant_for_test(sealed_version, bolt, **{**license_terms, "dp_required": True})
        assert_problem(post(bob_api, job_body(grant, tiny)), 422, "training.dp_required", "/dp/enabled")
        assert_nothing_stored()

    def test_privacy_budget_of_the_license(self, bob_api, sealed_version, bolt, tiny, license_terms):
        grant = grant_for_test(sealed_version, bolt, **{**license_terms, "epsilon_cap": "2"})
        dp = {"enabled": True, "target_epsilon": 1.5}
        first = post(bob_api, job_body(grant, tiny, template="causal_lm_lora", dp=dp))
        assert first.status_code == 202, first.content
        assert first.json()["epsilon_reserved"] == "1.500"
        assert_problem(
            post(bob_api, job_body(grant, tiny, template="causal_lm_lora", dp=dp)),
            409,
            "training.privacy_budget_exceeded",
        )
        assert PrivacyBudgetEntry.objects.count() == 1

    def test_privacy_budget_of_the_version(self, alice, dataset, upload, bolt, bob_api, tiny, license_terms):
        version = custody.version_create(actor=alice, dataset=dataset, epsilon_cap=Decimal("3"))
        upload(version, jsonl([{"text": f"Line {i} of the capped set."} for i in range(10)]))
        custody.version_process(actor=alice, version=version)
        drain()
        custody.version_seal(actor=alice, version=version)
        grant = grant_for_test(version, bolt, **license_terms)
        without_dp = post(bob_api, job_body(grant, tiny, template="causal_lm_lora"))
        assert_problem(without_dp, 422, "training.dp_required")
        dp = {"enabled": True, "target_epsilon": 2}
        assert post(bob_api, job_body(grant, tiny, template="causal_lm_lora", dp=dp)).status_code == 202
        assert_problem(
            post(bob_api, job_body(grant, tiny, template="causal_lm_lora", dp=dp)),
            409,
            "training.privacy_budget_exceeded",
        )

    def test_job_too_large(self, bob_api, grant, tiny, settings):
        settings.TRAINING_MAX_RECORDS = 10
        assert_problem(post(bob_api, job_body(grant, tiny)), 422, "training.job_too_large")
        assert_nothing_stored()


class TestCancelQueued:
    def test_cancels_at_once_and_releases_the_budget(
        self, bob_api, sealed_version, bolt, tiny, license_terms
    ):
        grant = grant_for_test(sealed_version, bolt, **{**license_terms, "epsilon_cap": "2"})
        dp = {"enabled": True, "target_epsilon": 1.5}
        job_id = post(bob_api, job_body(grant, tiny, template="causal_lm_lora", dp=dp)).json()["id"]
        response = bob_api.post(f"{URL}/{job_id}/cancel")
        assert response.status_code == 200, response.content
        assert response.json()["state"] == "cancelled"
        job = TrainingJob.objects.get(public_id=job_id)
        assert job.budget == BudgetHold.RELEASED
        assert PrivacyBudgetEntry.objects.get().state == "released"
        # The released epsilon is available again.
        again = post(bob_api, job_body(grant, tiny, template="causal_lm_lora", dp=dp))
        assert again.status_code == 202, again.content

    def test_gives_the_job_slot_back(self, bob_api, sealed_version, bolt, tiny, license_terms):
        grant = grant_for_test(sealed_version, bolt, **{**license_terms, "max_jobs": 1})
        job_id = post(bob_api, job_body(grant, tiny)).json()["id"]
        assert bob_api.post(f"{URL}/{job_id}/cancel").status_code == 200
        grant.refresh_from_db()
        assert grant.jobs_reserved == 0
        again = post(bob_api, job_body(grant, tiny))
        assert again.status_code == 202, again.content

    def test_a_finished_job_cannot_be_cancelled(self, bob_api, grant, tiny, bob):
        job_id = post(bob_api, job_body(grant, tiny)).json()["id"]
        services.job_finish(
            job_id=TrainingJob.objects.get(public_id=job_id).pk, state=JobState.FAILED, reason="x"
        )
        assert_problem(bob_api.post(f"{URL}/{job_id}/cancel"), 409, "training.job_finished")

    def test_a_viewer_cannot_cancel(self, bob_api, grant, tiny, api, bolt):
        from tests.factories import MembershipFactory, UserFactory

        viewer = UserFactory(username="vic")
        MembershipFactory(user=viewer, organisation=bolt, role="viewer")
        job_id = post(bob_api, job_body(grant, tiny)).json()["id"]
        api.force_login(viewer)
        assert_problem(api.post(f"{URL}/{job_id}/cancel"), 403, "common.role_insufficient")
        assert TrainingJob.objects.get(public_id=job_id).state == JobState.QUEUED


@pytest.mark.postgres
def test_concurrent_submits_never_overshoot_the_privacy_budget(
    transactional_db, alice, dataset, upload, bolt, bob, tiny, license_terms
):
    if connection.vendor != "postgresql":
        pytest.skip("needs Postgres (row locks under real concurrency)")
    version = custody.version_create(actor=alice, dataset=dataset, epsilon_cap=Decimal("3"))
    upload(version, jsonl([{"text": f"Line {i} of the raced set."} for i in range(10)]))
    custody.version_process(actor=alice, version=version)
    drain()
    custody.version_seal(actor=alice, version=version)
    grant = grant_for_test(version, bolt, **{**license_terms, "max_jobs": 20})
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def submit() -> None:
        try:
            barrier.wait()
            services.job_submit(
                actor=bob,
                organisation=bolt,
                grant=grant,
                request=services.JobRequest(
                    template="causal_lm_lora",
                    base=tiny,
                    hyperparameters=dict(TINY_HP),
                    dp={"enabled": True, "target_epsilon": 1.0},
                ),
            )
            outcomes.append("ok")
        except Conflict as exc:
            outcomes.append(exc.code)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ok"] * 3 + ["training.privacy_budget_exceeded"] * 5
    reserved = sum(e.epsilon for e in PrivacyBudgetEntry.objects.filter(version=version))
    assert reserved == Decimal("3")


class TestSweep:
    def test_a_job_whose_work_item_gave_up_fails_cleanly(self, submit, sealed_version, bolt, license_terms):
        from common.models import WorkState
        from training.tasks import sweep_jobs

        grant = grant_for_test(sealed_version, bolt, **{**license_terms, "epsilon_cap": "2"})
        job = submit(grant, template="causal_lm_lora", dp={"enabled": True, "target_epsilon": 1.0})
        WorkItem.objects.filter(kind="training.job", ref=str(job.pk)).update(
            state=WorkState.FAILED, attempts=3
        )
        TrainingJob.objects.filter(pk=job.pk).update(state=JobState.RUNNING, attempts=3)
        assert sweep_jobs() == 1
        job.refresh_from_db()
        assert job.state == JobState.FAILED and job.failure_code == "training.worker_lost"
        assert job.budget == BudgetHold.RELEASED
        assert sweep_jobs() == 0


class TestRevocationAndTakedown:
    def test_a_revoked_license_cancels_its_queued_jobs(
        self, submit, grant, django_capture_on_commit_callbacks
    ):
        job = submit(grant)
        with django_capture_on_commit_callbacks(execute=True):
            custody.grant_revoke(grant=grant, reason="unpaid")
        job.refresh_from_db()
        assert job.state == JobState.CANCELLED and job.failure_code == "training.license_revoked"
        assert "unpaid" in job.failure_reason

    def test_a_takedown_destroys_the_artifacts_kept_in_custody(
        self, submit, grant, sealed_version, alice, django_capture_on_commit_callbacks
    ):
        from common.blobs import blob_store

        job = submit(grant)
        key = custody.artifact_seal(version=sealed_version, name=f"training-job-{job.pk}", data=b"weights")
        TrainingJob.objects.filter(pk=job.pk).update(
            state=JobState.SUCCEEDED, artifact_encrypted=True, artifact_blob_key=key
        )
        assert custody.artifact_open(version=sealed_version, name=f"training-job-{job.pk}") == b"weights"
        with django_capture_on_commit_callbacks(execute=True):
            custody.version_takedown(actor=alice, version=sealed_version, reason="contract ended")
        drain()  # the destruction is a training.takedown_job work item
        job.refresh_from_db()
        assert job.artifact_blob_key == "" and not blob_store().exists(key)
        assert job.events.filter(kind="artifact_destroyed").exists()
