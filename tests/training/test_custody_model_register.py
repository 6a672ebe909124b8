"""What training records of a model it keeps in custody is what marketplace's model rights read
(issue 16): every version with its mixing weight, and a distilled student's teacher settlement in
the lineage entry shape ``tests/marketplace/orders/test_model_rights.py`` pays from."""

from __future__ import annotations

from typing import Any

import pytest

from custody.models import CustodyModel, DatasetVersion
from marketplace.services.model_listings import model_listing_create, model_rights
from tests.grants import grant_for_test
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from tests.marketplace.orders.test_model_rights import model_terms, record
from training.models import BaseModel, JobGrant, JobState, TrainingJob
from training.services.serving import custody_model_register

pytestmark = pytest.mark.django_db


def _grant(version: DatasetVersion, organisation: Any) -> Any:
    return grant_for_test(version, organisation, job_templates=["causal_lm"], weights_may_leave=False)


def _job(organisation: Any, user: Any, version: DatasetVersion, **fields: Any) -> TrainingJob:
    return TrainingJob.objects.create(
        organisation=organisation,
        submitted_by=user,
        grant=_grant(version, organisation),
        base=BaseModel.objects.get(name="gpt2-tiny", owner=None),
        state=JobState.SUCCEEDED,
        artifact_encrypted=True,
        artifact_blob_key="custody/artifacts/model",
        **fields,
    )


def test_a_distilled_students_teacher_is_in_its_lineage_and_paid(
    bolt,
    bob,
    acme,
    cora,
    sealed_rows,  # noqa: F811
):
    teacher = record("job_000000000000007e", bolt, [sealed_rows(tokens={acme: 3000})], artifact="t-1")
    settlement = {
        "teacher_model": teacher.job_ref,
        "licenses": [{"ref": "lic_t", "grant": "grt_0000000000000000"}],
        "dataset_versions": [teacher.version.public_id],
        "share_bps": 5000,
    }
    version = sealed_rows(tokens={cora: 1000})
    job = _job(
        bolt,
        bob,
        version,
        template="distill_causal_lm",
        request={"distill": {"resolved": {"ref": teacher.job_ref, "settlement": settlement}}},
    )
    model = custody_model_register(job=job, version=version, archive_sha256="ab" * 32)
    assert {"teacher": teacher.job_ref, "settlement": settlement} in model.lineage
    listing = model_listing_create(
        actor=bob, organisation=bolt, model_ref=model.job_ref, title="Student", terms=model_terms(0)
    )
    shares = model_rights(listing)
    # Half to the teacher's holders (Acme, its only data holder, and Bolt as its trainer at 0 bps),
    # half to the student's data holder, Cora.
    assert shares[cora.pk] > 0 and shares[acme.pk] > 0
    assert shares[acme.pk] == shares[cora.pk]


def test_a_mixed_jobs_versions_carry_their_mixing_weights(bolt, bob, acme, cora, sealed_rows):  # noqa: F811
    first, second = sealed_rows(tokens={acme: 700}), sealed_rows(tokens={cora: 300})
    job = _job(bolt, bob, first, template="causal_lm")
    JobGrant.objects.create(job=job, grant=job.grant, position=0, weight_bps=7000)
    JobGrant.objects.create(job=job, grant=_grant(second, bolt), position=1, weight_bps=3000)
    model: CustodyModel = custody_model_register(job=job, version=first, archive_sha256="ab" * 32)
    weights = {e["version"]: e.get("weight_bps") for e in model.lineage if "version" in e}
    assert weights == {first.public_id: 7000, second.public_id: 3000}
