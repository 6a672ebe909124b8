"""A generation job through a live Celery worker (issue 17 items 1-2): the custody model trained by
the worker in the sandbox, then a generate job whose prompts plant 5% verbatim source records; the
worker samples in the sandbox, screens against the source version, drops the planted copies and
ingests the rest as a new version of the trainer's (the custody queue's ingest, on the same worker),
which reaches review without them and marked model-generated."""

from __future__ import annotations

import pytest

from common.processes import wait_until
from custody.models import DatasetVersion, VersionState
from tests.grants import grant_for_test
from tests.training.custody_model_fixtures import CUSTODY_TERMS, TINY_HP, source_records
from tests.training.test_worker_jobs import recover, sealed, shared_dirs  # noqa: F401
from training import services
from training.models import BaseModel, JobState, TrainingJob
from training.services.generation import generation_submit

pytestmark = pytest.mark.worker


def finished(job: TrainingJob) -> TrainingJob:
    def ended() -> bool:
        recover()
        return TrainingJob.objects.get(pk=job.pk).is_final

    wait_until(ended, what=f"job {job.public_id} to end", timeout=600, interval=1)
    return TrainingJob.objects.get(pk=job.pk)


@pytest.mark.timeout(1500)
def test_a_generation_job_through_the_worker_drops_planted_copies_before_review(
    shared_dirs,  # noqa: F811
    alice,
    acme,
    bob,
    bolt,
):
    sources = source_records()
    version = sealed(alice, acme, [{"text": text} for text in sources])
    grant = grant_for_test(version, bolt, **CUSTODY_TERMS)
    model = services.job_submit(
        actor=bob,
        organisation=bolt,
        grant=grant,
        request=services.JobRequest(
            template="causal_lm",
            base=BaseModel.objects.get(name="gpt2-tiny", owner=None),
            hyperparameters=dict(TINY_HP),
        ),
    )
    model = finished(model)
    assert model.state == JobState.SUCCEEDED, (
        model.failure_code,
        model.failure_reason,
        shared_dirs.log_tail(),
    )
    assert model.artifact_encrypted

    planted = sources[:2]
    job = generation_submit(
        actor=bob,
        organisation=bolt,
        model=model,
        generation={
            "prompts": planted + [f"A customer wrote about order {i}" for i in range(38)],
            "records": 40,
            "max_new_tokens": 6,
            "seed": 2,
        },
    )
    job = finished(job)
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason, shared_dirs.log_tail())
    report = job.metrics["generation"]
    assert report["dropped_exact"] + report["dropped_near"] >= 2 and report["dropped"] <= 3, report

    synthetic = DatasetVersion.objects.get(public_id=report["synthetic_version"])

    def reviewed() -> bool:
        recover()
        return DatasetVersion.objects.get(pk=synthetic.pk).state == VersionState.REVIEW

    wait_until(reviewed, what="the synthetic version's ingest", timeout=300, interval=1)
    synthetic.refresh_from_db()
    assert synthetic.records == report["kept"]
    assert synthetic.dataset.owner == bolt and synthetic.provenance["model_generated"] is True
    assert synthetic.provenance["source_merkle_root"] == version.merkle_root
    assert job.receipt["receipt"]["lineage"][0]["job"] == model.public_id
