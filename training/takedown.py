"""Training's side of a takedown, on leased work items (DESIGN.md "Keys and takedown").

Custody rings ``version_taken_down`` after its commit; the receiver
(``receivers``) calls :func:`takedown_enqueue`, which records one
``training.takedown_job`` item (ref: job id) for each job on the version that
is still queued or whose artifact is withheld in custody. The handler cancels
the queued job (``job_finish``, audited, the trainer notified) and destroys
the version's withheld artifacts (``artifacts_withheld_destroy``, audited per
artifact, the trainer notified). Both re-read their rows under a lock and
change only what is left, so an item run twice does nothing the second time.
Running jobs stop at the launcher's next check of the revoked grant; one that
still lands a withheld artifact afterwards is found by :func:`takedown_sweep`
(run by ``training.sweep_jobs`` on beat), which enqueues whatever a lost
doorbell or a late job left without an item.
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import BigIntegerField, Q, QuerySet
from django.db.models.functions import Cast

from common.models import WorkItem
from common.work import PermanentWorkError, work_enqueue, work_handler
from custody.models import DatasetVersion, VersionState
from training.models import JobState, TrainingJob
from training.services.jobs import artifacts_withheld_destroy, job_finish

JOB_WORK = "training.takedown_job"
SWEEP_BATCH = 500

# Something left to undo: a job that never started, or weights kept in custody.
_LEFT = Q(state=JobState.QUEUED) | (Q(artifact_encrypted=True) & ~Q(artifact_blob_key=""))


def _left(versions: QuerySet[DatasetVersion] | list[int], *, sweep: bool, limit: int) -> list[int]:
    jobs = TrainingJob.objects.filter(_LEFT, grant__version__in=versions)
    if sweep:
        # An item that failed is an operator's to re-drive (work_retry); the sweep leaves it.
        enqueued = (
            WorkItem.objects.filter(kind=JOB_WORK)
            .annotate(job_id=Cast("ref", output_field=BigIntegerField()))
            .values("job_id")
        )
        jobs = jobs.exclude(pk__in=enqueued)
    return list(jobs.order_by("pk").values_list("pk", flat=True)[:limit])


def _enqueue(job_ids: list[int]) -> None:
    with transaction.atomic():
        for job_id in job_ids:
            work_enqueue(kind=JOB_WORK, ref=str(job_id), queue="default")


def takedown_enqueue(*, version_id: int) -> list[int]:
    """Enqueue an item for each queued job and withheld artifact of a taken-down version; their job ids."""
    if not DatasetVersion.objects.filter(pk=version_id, state=VersionState.TAKEN_DOWN).exists():
        return []
    job_ids = _left([version_id], sweep=False, limit=SWEEP_BATCH)
    _enqueue(job_ids)
    return job_ids


def takedown_sweep(*, limit: int = SWEEP_BATCH) -> list[int]:
    """Enqueue the jobs on taken-down versions with something left to undo and no item yet."""
    job_ids = _left(DatasetVersion.objects.filter(state=VersionState.TAKEN_DOWN), sweep=True, limit=limit)
    _enqueue(job_ids)
    return job_ids


@work_handler(JOB_WORK)
def _undo_job(item: WorkItem) -> None:
    job = TrainingJob.objects.select_related("grant__version").filter(pk=int(item.ref)).first()
    if job is None:
        raise PermanentWorkError(f"no training job {item.ref}")
    version = job.grant.version
    if version.state != VersionState.TAKEN_DOWN:
        raise PermanentWorkError(f"version {version.pk} is {version.state}, not taken down")
    reason = f"The dataset version was taken down: {version.failure_reason}"[:1000]
    if job.state == JobState.QUEUED:
        job_finish(job_id=job.pk, state=JobState.CANCELLED, code="training.license_revoked", reason=reason)
    if job.artifact_encrypted and job.artifact_blob_key:
        artifacts_withheld_destroy(version_id=version.pk, reason=version.failure_reason)
