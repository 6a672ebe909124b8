# ruff: noqa: F811  (fixtures imported from tests/training/custody_model_fixtures.py)
"""A model held in custody as a later job's starting point (issue 16 item 4, issue 17 item 1).

The source model is trained for real (gpt2-tiny in the sandbox) under a license that keeps the
weights in custody; the later job names it by its job id instead of a base. The launcher decrypts
it into the sandbox's private directory only, the new weights stay in custody, and the receipt
keeps the lineage chain. Refusals come at submit with a code and a pointer.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone

from common.models import AuditEvent
from custody import services as custody
from custody.models import Grant
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.grants import grant_for_test
from tests.training.custody_model_fixtures import (  # noqa: F401
    CUSTODY_TERMS,
    TINY_HP,
    _work_dir,
    bob_api,
    custody_grant,
    custody_model,
    source_version,
)
from tests.training.test_submit import assert_problem
from training.models import JobState, TrainingJob
from training.receipts import receipt_sha256

URL = "/api/v1/training/jobs"


def fine_tune_body(grant: Grant, model: TrainingJob, **overrides):
    body = {
        "license": grant.external_ref,
        "template": "causal_lm",
        "custody_model": model.public_id,
        "hyperparameters": dict(TINY_HP),
    }
    body.update(overrides)
    return body


@pytest.mark.timeout(900)  # trains in the sandbox and ingests twice: past the 300 s default
def test_a_later_job_fine_tunes_the_custody_model_and_its_receipt_keeps_the_lineage(
    bob_api, bolt, custody_model, source_version
):
    from tests.custody.conftest import drain

    # The later job's own license lets weights leave: derived from custody weights, they stay.
    leaving = grant_for_test(source_version, bolt, **{**CUSTODY_TERMS, "weights_may_leave": True})
    response = bob_api.post(URL, fine_tune_body(leaving, custody_model), format="json")
    assert response.status_code == 202, response.content
    job = TrainingJob.objects.get(public_id=response.json()["id"])
    assert job.custody_model_id == custody_model.pk
    assert job.spec["base"] == {"kind": "uploaded", "path": "base"}
    drain()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
    assert job.artifact_encrypted, "weights derived from a custody model must stay in custody"

    archive = custody.artifact_open(version=source_version, name=f"training-job-{custody_model.pk}")
    (entry,) = job.receipt["receipt"]["lineage"]
    assert entry["job"] == custody_model.public_id
    assert entry["artifact_sha256"] == hashlib.sha256(archive).hexdigest()
    assert entry["receipt_sha256"] == receipt_sha256(custody_model.receipt)
    assert [lic["merkle_root"] for lic in entry["licenses"]] == [source_version.merkle_root]
    assert entry["licenses"][0]["ref"] == custody_model.grant.external_ref
    assert AuditEvent.objects.filter(
        action="training.custody_model_open", object_id=str(custody_model.pk)
    ).exists()

    # The chain: a job from the derived model names both, nested.
    response = bob_api.post(URL, fine_tune_body(leaving, job), format="json")
    assert response.status_code == 202, response.content
    drain()
    third = TrainingJob.objects.get(public_id=response.json()["id"])
    assert third.state == JobState.SUCCEEDED, (third.failure_code, third.failure_reason)
    (outer,) = third.receipt["receipt"]["lineage"]
    assert outer["job"] == job.public_id
    assert [inner["job"] for inner in outer["lineage"]] == [custody_model.public_id]


def test_refusals_at_submit_point_at_the_term(bob_api, bolt, bob, custody_model, custody_grant, token_for):
    generate = {
        "template": "generate",
        "custody_model": custody_model.public_id,
        "generation": {"prompts": ["Ticket"], "records": 4},
    }
    # Terms that do not name the use.
    Grant.objects.filter(pk=custody_grant.pk).update(
        terms={**custody_grant.terms, "job_templates": ["causal_lm"]}
    )
    assert_problem(
        bob_api.post(URL, generate, format="json"),
        422,
        "training.custody_model_use_not_permitted",
        "/terms/permission/job_templates",
    )
    assert_problem(
        bob_api.post(URL, fine_tune_body(custody_grant, custody_model), format="json"),
        422,
        "training.custody_model_use_not_permitted",
        "/terms/permission/job_templates",
    )
    # The governing license expired.
    Grant.objects.filter(pk=custody_grant.pk).update(
        terms=CUSTODY_TERMS, expires_at=timezone.now() - timedelta(minutes=1)
    )
    assert_problem(
        bob_api.post(URL, generate, format="json"),
        409,
        "training.custody_model_license_inactive",
        "/custody_model",
    )
    Grant.objects.filter(pk=custody_grant.pk).update(expires_at=None)
    # Someone else's model answers as an unknown one.
    other = OrganisationFactory(name="Other Trainer", is_provider=False, is_trainer=True)
    eve = UserFactory(username="eve")
    MembershipFactory(user=eve, organisation=other, role="admin")
    eve_api = token_for(eve, other, ["read", "train"])
    assert_problem(
        eve_api.post(URL, generate, format="json"), 404, "training.custody_model_not_found", "/custody_model"
    )
    # A base and a custody model at once.
    body = {**fine_tune_body(custody_grant, custody_model), "base": custody_model.base.public_id}
    assert_problem(bob_api.post(URL, body, format="json"), 422, "training.custody_model_ambiguous", "/base")
    # Settings out of bounds point into the generation block.
    bad = {**generate, "generation": {"prompts": ["Ticket"], "records": 10**6}}
    assert_problem(bob_api.post(URL, bad, format="json"), 422, "training.spec_invalid", "/generation/records")
    # Positive control: the same generate body is accepted once nothing refuses it.
    assert bob_api.post(URL, generate, format="json").status_code == 202


def test_a_model_not_held_in_custody_is_refused(bob_api, bob, bolt, source_version):
    from training import services
    from training.models import BaseModel

    leaving = grant_for_test(source_version, bolt, **{**CUSTODY_TERMS, "weights_may_leave": True})
    queued = services.job_submit(
        actor=bob,
        organisation=bolt,
        grant=leaving,
        request=services.JobRequest(
            template="causal_lm",
            base=BaseModel.objects.get(name="gpt2-tiny", owner=None),
            hyperparameters=dict(TINY_HP),
        ),
    )
    body = fine_tune_body(leaving, queued)
    assert_problem(
        bob_api.post(URL, body, format="json"), 409, "training.custody_model_not_held", "/custody_model"
    )
    unknown = {**body, "custody_model": "job_0000000000000000"}
    assert_problem(
        bob_api.post(URL, unknown, format="json"), 404, "training.custody_model_not_found", "/custody_model"
    )
