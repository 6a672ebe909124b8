"""Training jobs through a real Celery worker, SIGKILLed mid-job on a seeded schedule and recovered.

The sweeper hands the dead worker's expired lease to the restarted worker,
which runs the job again from the start (one new stream open); usage is
counted once, and the dead attempt's working directory is gone. The drill
(tests/worker/drill.py) runs a stream of tiny jobs, kills the worker on its
schedule (never during a job's last attempt, so every job should succeed),
and the offline checkers of chaos/checks.py judge its history.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from django.db import transaction

from chaos.checks import (
    Check,
    check_audit_chain,
    check_jobs_terminal,
    check_no_plaintext_left,
    check_usage_once,
)
from common.models import AuditEvent
from common.processes import wait_until
from common.work import work_sweep
from custody import services as custody
from custody.models import DatasetVersion, Grant, UsageRecord, VersionState
from tests.custody.conftest import jsonl
from tests.custody.scanner import scan_files
from tests.grants import grant_for_test
from tests.training.conftest import TINY_HP
from tests.worker.drill import KillDrill, use_worker_dirs
from training import services
from training.launcher import work_root
from training.models import ACTIVE_STATES, BaseModel, JobState, TrainingJob
from training.services.jobs import WORK_KIND
from training.tasks import sweep_jobs

pytestmark = pytest.mark.worker

# In every record, so that a scan of the disk finds any plaintext a dead attempt left.
SENTINEL = "zqworkdirsentinel"
JOB_CHECKS: list[Check] = [check_jobs_terminal, check_usage_once, check_no_plaintext_left, check_audit_chain]


@pytest.fixture
def shared_dirs(celery_worker_process, settings):
    """Point this process at the worker's blob, key and audit export directories and its work dir."""
    use_worker_dirs(settings, celery_worker_process)
    # The worker's own work dir when the plugin gives it one; else the shared default it uses.
    default = Path(settings.VAR_DIR) / "training-work"
    settings.TRAINING_WORK_DIR = Path(celery_worker_process.env.get("SEALROOM_TRAINING_WORK_DIR", default))
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


def recover() -> None:
    """What beat does: re-ring expired leases and lost doorbells, fail given-up jobs, remove dead workdirs."""
    work_sweep()
    sweep_jobs()


class JobStream:
    """Tiny jobs on one grant, submitted one after another, each acknowledgement in the drill's history."""

    def __init__(self, drill: KillDrill, bob, bolt, grant: Grant, *, hyperparameters: dict[str, Any]) -> None:
        self.drill, self.bob, self.bolt, self.grant = drill, bob, bolt, grant
        self.hyperparameters = hyperparameters
        self.base = BaseModel.objects.get(name="gpt2-tiny", owner=None)
        self.jobs: list[int] = []
        # The quick drill kills only once training began, so that usage was counted before the kill.
        self.kill_before_training = True

    def submit(self) -> None:
        n = len(self.jobs) + 1
        self.drill.invoke("job_submit", n=n)
        job = services.job_submit(
            actor=self.bob,
            organisation=self.bolt,
            grant=self.grant,
            request=services.JobRequest(
                template="causal_lm", base=self.base, hyperparameters=self.hyperparameters
            ),
        )
        self.jobs.append(job.pk)
        self.drill.ok("job_submit", n=n, job=job.pk)

    def active(self) -> bool:
        return TrainingJob.objects.filter(pk__in=self.jobs, state__in=ACTIVE_STATES).exists()

    def feed(self) -> None:
        if not self.active():
            self.submit()

    def busy(self) -> str | None:
        item = self.drill.holding()
        if item is None:
            return None
        job = TrainingJob.objects.get(pk=int(item.ref))
        if job.training_started_at is None and not self.kill_before_training:
            return None
        return f"job {job.pk} attempt {item.attempts}: {job.state}, step {job.step}"

    def done(self) -> bool:
        return not self.active()


def job_drill(
    worker, stream_args: tuple, *, name: str, faults: int, latest: float, before_training: bool
) -> JobStream:
    """Run jobs, kill the worker ``faults`` times on schedule, and return the stream once every job ended."""
    alice, acme, bob, bolt, records = stream_args
    version = sealed(alice, acme, records)
    grant = grant_for_test(version, bolt, max_epochs=3, weights_may_leave=True, gate_max_exposure=30.0)
    with KillDrill(
        name, worker, kinds=[WORK_KIND], faults=faults, earliest=1.0, latest=latest, recover=recover
    ) as drill:
        stream = JobStream(drill, bob, bolt, grant, hyperparameters=HYPERPARAMETERS)
        stream.kill_before_training = before_training
        stream.submit()
        drill.strike_all(busy=stream.busy, feed=stream.feed, done=stream.done, timeout=600)
        drill.finish(stream.done, what="every acknowledged job to end", timeout=600)
        assert drill.check(JOB_CHECKS) == []
    assert drill.kills == faults
    assert scan_files([work_root()], [SENTINEL]) == {}
    for job in TrainingJob.objects.filter(pk__in=stream.jobs):
        assert job.state == JobState.SUCCEEDED, (job.pk, job.failure_code, job.failure_reason)
        opens = AuditEvent.objects.filter(
            action="custody.stream_open", details__consumer_ref=job.consumer_ref
        )
        # An attempt killed before it opened the stream opens none.
        assert 1 <= opens.count() <= job.attempts
        assert [e.kind for e in job.events.all()].count("restarted") == job.attempts - 1
    return stream


# 1 epoch of 4-record batches over the version: a few dozen steps of gpt2-tiny.
HYPERPARAMETERS = {**TINY_HP, "epochs": 1, "batch_size": 4, "max_seq_len": 32}


def records(count: int) -> list[dict]:
    return [
        {"text": f"Line {i}: the shipment {SENTINEL} for depot {i % 7} left on time."} for i in range(count)
    ]


def test_a_worker_killed_mid_job_is_recovered_and_usage_counts_once(shared_dirs, alice, acme, bob, bolt):
    stream = job_drill(
        shared_dirs,
        (alice, acme, bob, bolt, records(48)),
        name="training-quick",
        faults=1,
        latest=2.0,
        before_training=False,
    )
    [job] = TrainingJob.objects.filter(pk__in=stream.jobs)
    assert job.attempts == 2
    kinds = sorted(UsageRecord.objects.filter(grant=job.grant).values_list("kind", flat=True))
    assert kinds == ["job_started", "tokens_trained"]
    opens = AuditEvent.objects.filter(action="custody.stream_open", details__consumer_ref=job.consumer_ref)
    assert opens.count() == job.attempts


@pytest.mark.proof
@pytest.mark.timeout(1200)
def test_twenty_kills_over_a_stream_of_jobs_lose_no_job_and_count_usage_once(
    shared_dirs, settings, alice, acme, bob, bolt
):
    # Six attempts a job (the work item's limit is set at submit, here): up to five kills each,
    # so twenty kills spread over a few jobs instead of ten full final attempts.
    settings.TRAINING_MAX_ATTEMPTS = 6
    stream = job_drill(
        shared_dirs,
        (alice, acme, bob, bolt, records(48)),
        name="training-proof",
        faults=20,
        latest=240.0,
        before_training=True,
    )
    assert len(stream.jobs) >= 4  # none is killed on its last attempt
