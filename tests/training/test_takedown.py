"""A takedown's training side as leased work items: cancel queued jobs, destroy withheld artifacts, once."""

from __future__ import annotations

from common.blobs import blob_store
from common.models import AuditEvent, WorkItem, WorkState
from common.work import work_run
from custody import services as custody
from training.models import JobState, TrainingJob
from training.takedown import JOB_WORK, takedown_enqueue
from training.tasks import sweep_jobs


def run_takedown_items() -> None:
    """Run the queued takedown items (only those: the jobs' own items would start the launcher)."""
    queued = WorkItem.objects.filter(kind=JOB_WORK, state=WorkState.QUEUED)
    for item_id in queued.values_list("pk", flat=True):
        assert work_run(item_id=item_id, owner="test") == "done"


def withheld(job: TrainingJob) -> str:
    """Give ``job`` an encrypted artifact kept in custody, as the release gate leaves one; its blob key."""
    key = custody.artifact_seal(version=job.grant.version, name=f"training-job-{job.pk}", data=b"weights")
    TrainingJob.objects.filter(pk=job.pk).update(
        state=JobState.SUCCEEDED, artifact_encrypted=True, artifact_blob_key=key
    )
    return key


class TestTakedownJobs:
    def test_the_sweep_undoes_what_a_lost_bell_left_and_a_second_run_changes_nothing(
        self, submit, grant, sealed_version, alice, django_capture_on_commit_callbacks
    ):
        queued, finished = submit(grant), submit(grant)
        key = withheld(finished)
        with django_capture_on_commit_callbacks(execute=False):  # no doorbell rings
            custody.version_takedown(actor=alice, version=sealed_version, reason="contract ended")
        assert not WorkItem.objects.filter(kind=JOB_WORK).exists()

        sweep_jobs()
        assert set(WorkItem.objects.filter(kind=JOB_WORK).values_list("ref", flat=True)) == {
            str(queued.pk),
            str(finished.pk),
        }
        run_takedown_items()
        queued.refresh_from_db()
        finished.refresh_from_db()
        assert queued.state == JobState.CANCELLED
        assert finished.artifact_blob_key == "" and not blob_store().exists(key)
        assert not WorkItem.objects.filter(kind=JOB_WORK).exclude(state=WorkState.DONE).exists()
        # A second bell and a second run: nothing is cancelled or destroyed (or audited) twice.
        assert takedown_enqueue(version_id=sealed_version.pk) == []
        WorkItem.objects.filter(kind=JOB_WORK).update(state=WorkState.QUEUED)
        run_takedown_items()
        cancelled = AuditEvent.objects.filter(action="training.job_cancelled", object_id=str(queued.pk))
        assert cancelled.count() == 1
        assert AuditEvent.objects.filter(action="training.artifact_destroy").count() == 1
