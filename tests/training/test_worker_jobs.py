"""A training job through a real Celery worker, killed with SIGKILL mid-training and recovered.

The sweeper hands the dead worker's expired lease to the restarted worker,
which runs the job again from the start (one new stream open); usage is
counted once, and the first attempt's working directory is gone.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from django.db import transaction

from common.models import AuditEvent
from common.work import work_sweep
from custody import services as custody
from custody.models import DatasetVersion, UsageRecord, VersionState
from tests.custody.conftest import jsonl
from tests.grants import grant_for_test
from tests.training.conftest import TINY_HP
from tests.worker.harness import TEST_LEASE_SECONDS, wait_until
from training import services
from training.launcher import workdirs_of
from training.models import BaseModel, JobState, TrainingJob
from training.tasks import sweep_jobs

pytestmark = pytest.mark.worker


@pytest.fixture
def shared_dirs(celery_worker_process, settings):
    """Point this process at the worker's blob and key directories and its training work dir."""
    settings.BLOB_DIR = Path(celery_worker_process.env["SEALROOM_BLOB_DIR"])
    settings.KEY_DIR = Path(celery_worker_process.env["SEALROOM_KEY_DIR"])
    settings.TRAINING_WORK_DIR = Path(settings.VAR_DIR) / "training-work"
    settings.WORK_REQUEUE_AFTER_SECONDS = 5
    return celery_worker_process


def sealed(alice, acme, records: list[dict]) -> DatasetVersion:
    with transaction.atomic():
        dataset = custody.dataset_create(actor=alice, organisation=acme, name=f"Set {time.time_ns()}")
        version = custody.version_create(actor=alice, dataset=dataset)
        contribution = custody.contribution_start(
            actor=alice, organisation=acme, version=version, filename="records.jsonl"
        )
        custody.contribution_part_put(contribution=contribution, number=1, data=jsonl(records))
    custody.contribution_complete(actor=alice, contribution=contribution)
    custody.version_process(actor=alice, version=version)

    def reviewed() -> bool:
        work_sweep()
        return DatasetVersion.objects.get(pk=version.pk).state == VersionState.REVIEW

    wait_until(reviewed, what="the ingest", timeout=180, interval=0.5)
    return custody.version_seal(actor=alice, version=version)


def test_a_worker_killed_mid_job_is_recovered_and_usage_counts_once(shared_dirs, alice, acme, bob, bolt):
    records = [{"text": f"Line {i}: the shipment for depot {i % 7} left on time."} for i in range(300)]
    version = sealed(alice, acme, records)
    grant = grant_for_test(version, bolt, max_epochs=3, weights_may_leave=True, gate_max_exposure=30.0)
    job = services.job_submit(
        actor=bob,
        organisation=bolt,
        grant=grant,
        request=services.JobRequest(
            template="causal_lm",
            base=BaseModel.objects.get(name="gpt2-tiny", owner=None),
            hyperparameters={**TINY_HP, "epochs": 3, "batch_size": 2, "max_seq_len": 64},
        ),
    )

    def training() -> bool:
        return TrainingJob.objects.get(pk=job.pk).training_started_at is not None

    wait_until(training, what="training to begin", timeout=180, interval=0.2)
    assert workdirs_of(job.pk), "the running attempt has a working directory"
    shared_dirs.kill()
    assert TrainingJob.objects.get(pk=job.pk).state == JobState.RUNNING
    time.sleep(TEST_LEASE_SECONDS + 0.5)
    shared_dirs.restart()

    def finished() -> TrainingJob | None:
        work_sweep()
        sweep_jobs()
        found = TrainingJob.objects.get(pk=job.pk)
        return found if found.is_final else None

    done = wait_until(finished, what="the recovered job", timeout=400, interval=1)
    assert done is not None
    assert done.state == JobState.SUCCEEDED, done.failure_reason
    assert done.attempts == 2
    kinds = list(UsageRecord.objects.filter(grant=grant).values_list("kind", flat=True))
    assert sorted(kinds) == ["job_started", "tokens_trained"]
    opens = AuditEvent.objects.filter(action="custody.stream_open", details__consumer_ref=done.consumer_ref)
    assert opens.count() == done.attempts
    assert [e.kind for e in done.events.all()].count("restarted") == done.attempts - 1
    assert workdirs_of(job.pk) == []
