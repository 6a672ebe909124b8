# ruff: noqa: F811  (fixtures imported from other test modules)
"""A licensee distils from a model it licensed, for real (issue 16): the launcher's path is the
owner's (tests/training/test_distill_worker.py), run here in-process by ``drain`` in the sandbox.

The teacher is a gpt2-tiny sealed in custody as a Bolt job's weights; Bolt lists it with
``distillation_allowed`` and Dyna buys a license; Dyna's student trains on Dyna's own data
license, which lets weights leave -- yet the student stays in custody, its receipt's teacher
entry names the model license, and the teacher's tokens are metered on that license.
"""

from __future__ import annotations

import hashlib
from typing import Any, cast

import pytest

from common.models import AuditEvent, Organisation
from custody import services as custody
from custody.models import CustodyModel, DatasetVersion, Grant, UsageKind, UsageRecord
from tests.custody.conftest import drain
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.grants import grant_for_test
from tests.marketplace.orders.conftest import fund  # noqa: F401
from tests.training.conftest import TINY_HP
from tests.training.custody_model_fixtures import _work_dir  # noqa: F401
from tests.training.models_world import seal_tiny_model
from tests.training.test_model_license_use import distill_body, model_terms
from training.models import BaseModel, JobState, TrainingJob

pytestmark = pytest.mark.django_db


def licensed(
    model: TrainingJob, bob, bolt, token_for, fund, terms: dict[str, Any]
) -> tuple[Organisation, Any, Grant]:
    """Bolt lists ``model`` with ``terms``; Dyna (a new trainer) buys a license through the API.
    Returns Dyna, Dan's API client and the model license's grant."""
    listed = token_for(bob, bolt, ["read", "train"]).post(
        "/api/v1/models/listings",
        {"model": model.public_id, "title": "Notes LM", "terms": terms},
        format="json",
    )
    assert listed.status_code == 201, listed.content
    dyna = cast(Organisation, OrganisationFactory(name="Dyna Apps", is_provider=False, is_trainer=True))
    dan = UserFactory(username="dan")
    MembershipFactory(user=dan, organisation=dyna, role="admin")
    dan_api = token_for(dan, dyna, ["read", "order", "train"])
    fund(dyna, 10_000)
    bought = dan_api.post(
        f"/api/v1/models/listings/{listed.json()['id']}/licenses",
        {"tokens": 1_000_000},
        format="json",
        HTTP_IDEMPOTENCY_KEY="buy-model-1",
    )
    assert bought.status_code == 201, bought.content
    return dyna, dan_api, Grant.objects.get(licensee=dyna, terms__kind="model")


@pytest.mark.timeout(900)  # ingests, then trains a student in the sandbox
def test_a_licensees_student_stays_in_custody_names_the_license_and_is_metered(
    alice, bob, bolt, sealed_version, token_for, fund
):
    teacher = seal_tiny_model(version=sealed_version, trainer=bolt, actor=bob).job
    dyna, dan_api, model_license = licensed(
        teacher, bob, bolt, token_for, fund, model_terms(distillation_allowed=True)
    )
    # Dyna's own data license lets weights leave: what is derived from the teacher must not.
    data_license = grant_for_test(
        sealed_version,
        dyna,
        purposes=["research"],
        job_templates=["distill_causal_lm"],
        max_jobs=2,
        max_tokens=1_000_000,
        max_epochs=2,
        weights_may_leave=True,
        gate_max_exposure=30.0,
    )
    tiny = BaseModel.objects.get(name="gpt2-tiny", owner=None)
    body = distill_body(data_license, teacher, tiny)
    body["hyperparameters"] = {**TINY_HP, "max_seq_len": 48}
    response = dan_api.post("/api/v1/training/jobs", body, format="json")
    assert response.status_code == 202, response.content

    drain()
    job = TrainingJob.objects.get(public_id=response.json()["id"])
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)

    # The student stays in custody: sealed there, recorded as a custody model, never downloadable.
    assert job.artifact_encrypted
    assert CustodyModel.objects.filter(job_ref=job.public_id).exists()
    download = dan_api.get(f"/api/v1/training/jobs/{job.public_id}/artifact")
    assert (download.status_code, download.json()["code"]) == (409, "training.weights_in_custody")

    # The receipt's teacher entry names the teacher's archive and the model license used.
    archive = custody.artifact_open(version=sealed_version, name=f"training-job-{teacher.pk}")
    entry = job.receipt["receipt"]["teacher"]
    assert entry["kind"] == "custody_model" and entry["ref"] == teacher.public_id
    assert entry["artifact_sha256"] == hashlib.sha256(archive).hexdigest()
    assert entry["model_license"]["grant"] == model_license.public_id
    assert entry["model_license"]["ref"] == model_license.external_ref

    # The teacher's forward passes are metered on the model license: the student's tokens, once.
    usage = UsageRecord.objects.get(grant=model_license, consumer_ref=job.consumer_ref)
    assert usage.kind == UsageKind.TOKENS_INFERRED
    assert usage.quantity == job.tokens_trained > 0
    assert AuditEvent.objects.filter(action="custody.model_license_use").count() == 1


@pytest.mark.timeout(900)  # ingests, then generates in the sandbox
def test_a_licensees_generation_runs_under_the_model_license_and_is_metered(
    alice, bob, bolt, sealed_version, token_for, fund
):
    model = seal_tiny_model(version=sealed_version, trainer=bolt, actor=bob).job
    dyna, dan_api, model_license = licensed(
        model, bob, bolt, token_for, fund, model_terms(generation_allowed=True)
    )
    response = dan_api.post(
        "/api/v1/training/jobs",
        {
            "template": "generate",
            "custody_model": model.public_id,
            "generation": {"prompts": ["Note"], "records": 4, "max_new_tokens": 12, "seed": 5},
        },
        format="json",
    )
    assert response.status_code == 202, response.content

    drain()
    job = TrainingJob.objects.get(public_id=response.json()["id"])
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
    assert job.grant == model_license
    # The corpus is a new version of Dyna's, in custody; the receipt's lineage names the license.
    synthetic = job.metrics["generation"]["synthetic_version"]
    assert DatasetVersion.objects.get(public_id=synthetic).dataset.owner == dyna
    (entry,) = job.receipt["receipt"]["lineage"]
    assert entry["job"] == model.public_id
    assert entry["model_license"]["grant"] == model_license.public_id
    # The generated tokens are metered on the model license, once.
    usage = UsageRecord.objects.get(
        grant=model_license, consumer_ref=job.consumer_ref, kind=UsageKind.TOKENS_INFERRED
    )
    assert usage.quantity == job.metrics["generation"]["tokens_generated"] > 0
