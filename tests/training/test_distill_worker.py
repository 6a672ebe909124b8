"""A distillation job end to end through a live Celery worker: tiny teacher, tiny student, real sandbox.

The worker streams the licensed records, the sandboxed runner computes the teacher's logits and
trains the student on them and the hard labels, the gate checks the student, and the receipt
names the teacher's hash and license beside the student's. Nothing of the teacher's predictions
leaves: the job's events, metrics and receipt hold no logits.
"""

from __future__ import annotations

import json

import pytest

from common.processes import wait_until
from tests.grants import grant_for_test
from tests.training.conftest import TINY_HP
from tests.training.test_worker_jobs import recover, sealed, shared_dirs  # noqa: F401
from training import services
from training.models import BaseModel, JobState, TrainingJob
from training.receipts import receipt_problems

pytestmark = pytest.mark.worker


def records(count: int) -> list[dict]:
    return [
        {"text": f"Ticket {i}: the parcel for depot {i % 5} arrived late and was refunded."}
        for i in range(count)
    ]


@pytest.mark.timeout(900)
def test_a_distilled_student_trains_in_the_sandbox_and_its_receipt_names_the_teacher(
    shared_dirs,  # noqa: F811
    alice,
    acme,
    bob,
    bolt,
):
    version = sealed(alice, acme, records(48))
    grant = grant_for_test(
        version,
        bolt,
        purposes=["research"],
        job_templates=["distill_causal_lm"],
        max_jobs=3,
        max_tokens=1_000_000,
        max_epochs=2,
        weights_may_leave=False,
        gate_max_exposure=30.0,
    )
    tiny = BaseModel.objects.get(name="gpt2-tiny", owner=None)
    job = services.job_submit(
        actor=bob,
        organisation=bolt,
        grant=grant,
        request=services.JobRequest(
            template="distill_causal_lm",
            base=tiny,
            hyperparameters={**TINY_HP, "epochs": 1},
            distill={"teacher": tiny.public_id, "alpha": 0.5, "temperature": 2.0},
        ),
    )

    def ended() -> bool:
        recover()
        return TrainingJob.objects.get(pk=job.pk).is_final

    wait_until(ended, what="the distillation job to end", timeout=600, interval=1)
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason, shared_dirs.log_tail())
    assert job.tokens_trained > 0
    assert job.artifact_encrypted  # the license keeps the weights in custody
    receipt = job.receipt["receipt"]
    assert receipt["template"] == "distill_causal_lm"
    assert receipt["spec"]["teacher"] == {"kind": "builtin", "name": "gpt2-tiny"}
    teacher = receipt["teacher"]
    assert teacher["kind"] == "builtin"
    assert teacher["ref"] == tiny.public_id
    assert teacher["artifact_sha256"] == tiny.file_hash
    assert teacher["license"] is None  # a built-in base is governed by no license
    assert receipt["license"]["ref"] == grant.external_ref
    assert receipt_problems(job.receipt, public_keys={job.receipt["key_id"]: job.receipt["public_key"]}) == []
    # The teacher's predictions stayed in the sandbox: nothing the job kept mentions logits.
    kept = json.dumps([job.metrics, job.loss_curve, job.gate, job.receipt]) + json.dumps(
        list(job.events.values_list("detail", flat=True))
    )
    assert "logit" not in kept.lower()
    assert "validation_loss" in job.metrics["final"] or job.metrics["final"]["steps"] >= 1
