# ruff: noqa: F811  (fixtures imported from tests/marketplace/...)
"""A licensee's use of a model held in custody beyond inference (issue 16): distil from it, generate
with it, fine-tune it further -- each when its model license's terms allow it, refused at submit
with a pointer at the term otherwise. A lapsed license is refused, an organisation without one
gets 404, and whatever the job makes names the model license and is metered on it.

The model is a succeeded Bolt job whose weights custody holds; Bolt lists it and Dyna buys a
license through the API, exactly as a buyer would (tests/training/test_models_api.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from common.models import AuditEvent, WorkItem
from custody import services as custody
from custody.models import DatasetVersion, Grant, GrantJob, UsageKind, UsageRecord
from custody.services.models_custody import custody_model_record, model_license_use_record
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.grants import grant_for_test
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from tests.marketplace.orders.conftest import fund  # noqa: F401
from tests.training.conftest import TINY_HP
from tests.training.test_submit import assert_problem
from training.models import BaseModel, JobState, TrainingJob
from training.services.custody_models import job_model_license, model_license_usage_record

pytestmark = pytest.mark.django_db

URL = "/api/v1/training/jobs"
FLAGS = ("distillation_allowed", "generation_allowed", "fine_tune_allowed")
# Dyna's own data license (what a student or a fine-tune trains on): it names every template.
DATA_TERMS: dict[str, Any] = {
    "purposes": ["research"],
    "job_templates": ["causal_lm", "distill_causal_lm"],
    "max_jobs": 5,
    "max_tokens": 1_000_000,
    "max_epochs": 3,
    "weights_may_leave": True,
    "gate_max_exposure": 20.0,
}


def model_terms(**flags: bool) -> dict[str, Any]:
    return {
        "purposes": ["research"],
        "inference": {
            "allowed": True,
            "price_per_million_tokens": "2.00",
            "currency": "EUR",
            "max_tokens_per_call": 64,
            "cap_tokens": 1_000_000,
        },
        **{flag: flags.get(flag, False) for flag in FLAGS},
        "model_share_bps": 2500,
        "term_days": 30,
    }


@pytest.fixture
def tiny() -> BaseModel:
    return BaseModel.objects.get(name="gpt2-tiny", owner=None)


@pytest.fixture
def model(bolt, bob, acme, sealed_rows, tiny) -> TrainingJob:
    """A succeeded Bolt causal_lm job whose weights custody holds, recorded as a custody model."""
    version: DatasetVersion = sealed_rows(tokens={acme: 1000})
    job = TrainingJob.objects.create(
        organisation=bolt,
        submitted_by=bob,
        grant=grant_for_test(version, bolt, job_templates=["causal_lm"], weights_may_leave=False),
        template="causal_lm",
        base=tiny,
        state=JobState.SUCCEEDED,
        artifact_encrypted=True,
        artifact_blob_key="custody/artifacts/model",
    )
    custody_model_record(
        job_ref=job.public_id,
        version=version,
        trainer=bolt,
        artifact_name=f"training-job-{job.pk}",
        artifact_sha256="cd" * 32,
        receipt_sha256="ef" * 32,
        task="causal_lm",
        template="causal_lm",
        base_name="gpt2-tiny",
        metrics={},
        lineage=[{"version": version.public_id, "merkle_root": version.merkle_root, "license": "lic_x"}],
    )
    return job


@pytest.fixture
def dyna(db):
    return OrganisationFactory(name="Dyna Apps", is_provider=False, is_trainer=True)


@pytest.fixture
def dan(dyna):
    user = UserFactory(username="dan")
    MembershipFactory(user=user, organisation=dyna, role="admin")
    return user


@pytest.fixture
def dan_api(token_for, dan, dyna):
    return token_for(dan, dyna, ["read", "order", "train"])


@pytest.fixture
def data_license(sealed_rows, dyna, acme) -> Grant:
    return grant_for_test(sealed_rows(tokens={acme: 500}), dyna, **DATA_TERMS)


@pytest.fixture
def buy(model, bob, bolt, dyna, dan_api, token_for, fund):
    """``buy(**flags)`` -> Dyna's model license grant on the model, listed by Bolt with those flags."""

    def _buy(**flags: bool) -> Grant:
        trainer = token_for(bob, bolt, ["read", "train"])
        created = trainer.post(
            "/api/v1/models/listings",
            {"model": model.public_id, "title": "Support LM", "terms": model_terms(**flags)},
            format="json",
        )
        assert created.status_code == 201, created.content
        fund(dyna, 10_000)
        bought = dan_api.post(
            f"/api/v1/models/listings/{created.json()['id']}/licenses",
            {"tokens": 1_000_000},
            format="json",
            HTTP_IDEMPOTENCY_KEY="buy-model-use-1",
        )
        assert bought.status_code == 201, bought.content
        return Grant.objects.get(licensee=dyna, terms__kind="model")

    return _buy


def distill_body(data_license: Grant, model: TrainingJob, tiny: BaseModel) -> dict[str, Any]:
    return {
        "license": data_license.external_ref,
        "template": "distill_causal_lm",
        "base": tiny.public_id,
        "hyperparameters": dict(TINY_HP),
        "distill": {"teacher": model.public_id, "alpha": 0.5, "temperature": 2.0},
    }


def generate_body(model: TrainingJob) -> dict[str, Any]:
    return {
        "template": "generate",
        "custody_model": model.public_id,
        "generation": {"prompts": ["Ticket"], "records": 4},
    }


def fine_tune_body(data_license: Grant, model: TrainingJob) -> dict[str, Any]:
    return {
        "license": data_license.external_ref,
        "template": "causal_lm",
        "custody_model": model.public_id,
        "hyperparameters": dict(TINY_HP),
    }


def bodies(data_license: Grant, model: TrainingJob, tiny: BaseModel) -> dict[str, tuple[dict[str, Any], str]]:
    """Each use: its submit body and the pointer a refusal of the model names."""
    return {
        "distill": (distill_body(data_license, model, tiny), "/distill/teacher"),
        "generate": (generate_body(model), "/custody_model"),
        "fine_tune": (fine_tune_body(data_license, model), "/custody_model"),
    }


def licensee_jobs(dyna) -> int:
    return TrainingJob.objects.filter(organisation=dyna).count()


class TestAllowedByTheTerms:
    def test_distillation_queues_the_student_naming_the_model_license(
        self, buy, dan_api, data_license, model, tiny, dyna
    ):
        lic = buy(distillation_allowed=True)
        response = dan_api.post(URL, distill_body(data_license, model, tiny), format="json")
        assert response.status_code == 202, response.content
        job = TrainingJob.objects.get(public_id=response.json()["id"])
        assert job.organisation == dyna and job.grant == data_license  # the student reads Dyna's data
        resolved = job.request["distill"]["resolved"]
        assert resolved["kind"] == "custody_model" and resolved["ref"] == model.public_id
        assert resolved["model_license"]["grant"] == lic.public_id
        assert resolved["model_license"]["ref"] == lic.external_ref
        # What a later settlement needs: the teacher's holders (its governing license) and the license.
        assert resolved["settlement"]["licenses"] == [
            {"ref": model.grant.external_ref, "grant": model.grant.public_id}
        ]
        assert resolved["settlement"]["model_license"]["grant"] == lic.public_id
        assert job_model_license(job) == (model, lic, "distill")

    def test_generation_runs_under_the_model_license_itself(self, buy, dan_api, model, dyna):
        lic = buy(generation_allowed=True)
        response = dan_api.post(URL, generate_body(model), format="json")
        assert response.status_code == 202, response.content
        job = TrainingJob.objects.get(public_id=response.json()["id"])
        assert job.grant == lic and job.custody_model == model
        assert job.request["model_license"]["grant"] == lic.public_id
        # Its slot is held on the model license, so the launcher's start-time reservation finds it.
        assert GrantJob.objects.filter(grant=lic, consumer_ref=job.consumer_ref).exists()
        assert WorkItem.objects.filter(kind="training.job", ref=str(job.pk)).exists()
        assert job_model_license(job) == (model, lic, "generate")

    def test_fine_tune_queues_a_job_on_the_data_license_from_the_model(
        self, buy, dan_api, data_license, model, dyna
    ):
        lic = buy(fine_tune_allowed=True)
        response = dan_api.post(URL, fine_tune_body(data_license, model), format="json")
        assert response.status_code == 202, response.content
        job = TrainingJob.objects.get(public_id=response.json()["id"])
        assert job.grant == data_license and job.custody_model == model
        assert job.request["model_license"]["grant"] == lic.public_id
        assert not GrantJob.objects.filter(grant=lic).exists()  # the data license counts the job
        assert job_model_license(job) == (model, lic, "fine_tune")

    def test_the_owners_own_path_needs_no_model_license(self, model, bob, bolt, token_for, tiny):
        # Bolt's own model, under a governing license naming generate: unchanged by model licenses.
        Grant.objects.filter(pk=model.grant_id).update(
            terms={**model.grant.terms, "job_templates": ["causal_lm", "generate"], "max_jobs": 5}
        )
        response = token_for(bob, bolt, ["read", "train"]).post(URL, generate_body(model), format="json")
        assert response.status_code == 202, response.content
        job = TrainingJob.objects.get(public_id=response.json()["id"])
        assert job.grant_id == model.grant_id and "model_license" not in job.request
        assert job_model_license(job) is None


class TestRefused:
    @pytest.mark.parametrize(
        ("use", "flag"),
        [
            ("distill", "distillation_allowed"),
            ("generate", "generation_allowed"),
            ("fine_tune", "fine_tune_allowed"),
        ],
    )
    def test_a_use_the_terms_do_not_allow_points_at_its_term(
        self, buy, dan_api, data_license, model, tiny, dyna, use, flag
    ):
        # Every other use allowed: only the one term refuses.
        buy(**{other: other != flag for other in FLAGS})
        body, _ = bodies(data_license, model, tiny)[use]
        problem = assert_problem(
            dan_api.post(URL, body, format="json"), 422, "training.model_use_not_licensed", f"/terms/{flag}"
        )
        assert flag in problem["detail"]
        assert licensee_jobs(dyna) == 0

    @pytest.mark.parametrize("use", ["distill", "generate", "fine_tune"])
    def test_an_expired_license_is_refused(self, buy, dan_api, data_license, model, tiny, dyna, use):
        lic = buy(**dict.fromkeys(FLAGS, True))
        Grant.objects.filter(pk=lic.pk).update(expires_at=timezone.now() - timedelta(minutes=1))
        body, pointer = bodies(data_license, model, tiny)[use]
        problem = assert_problem(
            dan_api.post(URL, body, format="json"), 409, "training.custody_model_license_inactive", pointer
        )
        assert "expired" in problem["detail"]
        assert licensee_jobs(dyna) == 0

    def test_a_revoked_license_is_refused(self, buy, dan_api, data_license, model, tiny, dyna):
        lic = buy(**dict.fromkeys(FLAGS, True))
        custody.grant_revoke(grant=lic, reason="test")
        problem = assert_problem(
            dan_api.post(URL, distill_body(data_license, model, tiny), format="json"),
            409,
            "training.custody_model_license_inactive",
            "/distill/teacher",
        )
        assert "revoked" in problem["detail"]
        assert licensee_jobs(dyna) == 0

    @pytest.mark.parametrize("use", ["distill", "generate", "fine_tune"])
    def test_an_organisation_without_a_license_gets_404(self, dan_api, data_license, model, tiny, dyna, use):
        body, pointer = bodies(data_license, model, tiny)[use]
        code = "training.custody_model_not_found"
        problem = assert_problem(dan_api.post(URL, body, format="json"), 404, code, pointer)
        assert model.organisation.name not in problem["detail"]
        assert licensee_jobs(dyna) == 0

    def test_a_license_on_another_model_does_not_open_this_one(
        self,
        buy,
        dan_api,
        model,
        bob,
        bolt,
        tiny,
        sealed_rows,
        acme,
    ):
        buy(**dict.fromkeys(FLAGS, True))
        other = TrainingJob.objects.create(
            organisation=bolt,
            submitted_by=bob,
            grant=grant_for_test(
                sealed_rows(tokens={acme: 100}), bolt, job_templates=["causal_lm", "generate"]
            ),
            template="causal_lm",
            base=tiny,
            state=JobState.SUCCEEDED,
            artifact_encrypted=True,
            artifact_blob_key="custody/artifacts/other",
        )
        assert_problem(
            dan_api.post(URL, generate_body(other), format="json"),
            404,
            "training.custody_model_not_found",
            "/custody_model",
        )

    def test_a_license_with_no_tokens_left_refuses_generation(self, buy, dan_api, model, dyna):
        lic = buy(generation_allowed=True)
        custody.usage_record(
            grant=lic, consumer_ref="inf_used", kind=UsageKind.TOKENS_INFERRED, quantity=1_000_000
        )
        assert_problem(
            dan_api.post(URL, generate_body(model), format="json"),
            409,
            "training.model_license_exhausted",
            "/terms/inference/cap_tokens",
        )
        assert licensee_jobs(dyna) == 0


class TestMetering:
    def test_a_distillation_is_metered_on_the_model_license_once(
        self, buy, dan_api, data_license, model, tiny, dyna
    ):
        lic = buy(distillation_allowed=True)
        response = dan_api.post(URL, distill_body(data_license, model, tiny), format="json")
        job = TrainingJob.objects.get(public_id=response.json()["id"])
        # As the launcher does in the transaction that finishes the student (twice: a retry).
        model_license_usage_record(job, tokens=4321)
        model_license_usage_record(job, tokens=4321)
        usage = UsageRecord.objects.get(grant=lic, consumer_ref=job.consumer_ref)
        assert (usage.kind, usage.quantity) == (UsageKind.TOKENS_INFERRED, 4321)
        events = AuditEvent.objects.filter(action="custody.model_license_use")
        assert events.count() == 1
        assert (
            events.get().details["use"] == "distill" and events.get().details["license"] == lic.external_ref
        )
        # The student's own data license is not charged for the teacher.
        assert not UsageRecord.objects.filter(grant=data_license, kind=UsageKind.TOKENS_INFERRED).exists()

    def test_a_fine_tune_is_tied_to_the_license_without_tokens(self, buy, dan_api, data_license, model):
        lic = buy(fine_tune_allowed=True)
        response = dan_api.post(URL, fine_tune_body(data_license, model), format="json")
        job = TrainingJob.objects.get(public_id=response.json()["id"])
        model_license_usage_record(job, tokens=999)
        usage = UsageRecord.objects.get(grant=lic, consumer_ref=job.consumer_ref)
        assert (usage.kind, usage.quantity) == (UsageKind.JOB_STARTED, 1)

    def test_the_owners_own_jobs_meter_nothing_on_model_licenses(self, buy, model, bob, bolt, tiny):
        lic = buy(distillation_allowed=True)
        own = TrainingJob.objects.create(
            organisation=bolt,
            submitted_by=bob,
            grant=model.grant,
            template="causal_lm",
            base=tiny,
            custody_model=model,
        )
        model_license_usage_record(own, tokens=100)
        assert not UsageRecord.objects.filter(grant=lic).exists()

    def test_an_unknown_use_is_a_programming_error(self, buy):
        lic = buy(distillation_allowed=True)
        with pytest.raises(ValueError):
            model_license_use_record(grant=lic, consumer_ref="job_x", use="inference", tokens=1)
