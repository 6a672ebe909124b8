"""Training's side of a contribution's withdrawal: tell the holders of artifacts that read it.

Custody rings ``contribution_withdrawn`` after it re-sealed the version
without the contribution; the receiver (``receivers``) enqueues one
``training.withdrawal_notice`` item (ref: the withdrawal's id). Its handler
finds every job that read the withdrawn records (custody's per-contribution
reads, ``contribution_lineage``, which follows the records back through
earlier re-seals) and whose weights were released for download, and notifies
each holding organisation once (``artifact.data_withdrawn``, through the
notifications and their webhooks). Released weights cannot be recalled; the
notice names the jobs so the holder can act under its license. A rerun finds
the notice already sent and sends nothing; :func:`withdrawal_sweep` (run by
``training.sweep_jobs`` on beat) enqueues a notice a lost bell left out.
"""

from __future__ import annotations

from django.db import transaction

from common.models import Notification, WorkItem
from common.notifications import notify_event
from common.work import PermanentWorkError, work_enqueue, work_handler
from custody import services as custody
from custody.models import ContributionWithdrawal, WithdrawalState
from training.models import JobState, TrainingJob

NOTICE_WORK = "training.withdrawal_notice"
NOTICE_KIND = "artifact.data_withdrawn"


def withdrawal_notice_enqueue(*, withdrawal_id: int) -> None:
    work_enqueue(kind=NOTICE_WORK, ref=str(withdrawal_id), queue="default")


def withdrawal_sweep(*, limit: int = 500) -> list[int]:
    """Enqueue the notice of each finished withdrawal that has none yet; their ids."""
    enqueued = WorkItem.objects.filter(kind=NOTICE_WORK).values_list("ref", flat=True)
    done = ContributionWithdrawal.objects.filter(state=WithdrawalState.DONE).order_by("pk")
    left = [pk for pk in done.values_list("pk", flat=True) if str(pk) not in set(enqueued)][:limit]
    with transaction.atomic():
        for pk in left:
            withdrawal_notice_enqueue(withdrawal_id=pk)
    return left


def released_jobs(*, withdrawal: ContributionWithdrawal) -> list[TrainingJob]:
    """Jobs that read the withdrawn records and whose weights left custody."""
    refs = {read.consumer_ref for read in custody.contribution_lineage(contribution=withdrawal.contribution)}
    ids = [int(ref.removeprefix("training-job-")) for ref in refs if ref.startswith("training-job-")]
    return list(
        TrainingJob.objects.filter(pk__in=ids, state=JobState.SUCCEEDED, artifact_encrypted=False)
        .exclude(artifact_blob_key="")
        .select_related("organisation")
        .order_by("pk")
    )


def withdrawal_notify(*, withdrawal_id: int) -> int:
    """Notify each organisation holding released weights trained on the withdrawn records; how many."""
    withdrawal = (
        ContributionWithdrawal.objects.select_related("contribution", "from_version__dataset", "to_version")
        .filter(pk=withdrawal_id)
        .first()
    )
    if withdrawal is None or withdrawal.state != WithdrawalState.DONE:
        raise PermanentWorkError(f"withdrawal {withdrawal_id} is not done")
    by_org: dict[int, list[TrainingJob]] = {}
    for job in released_jobs(withdrawal=withdrawal):
        by_org.setdefault(job.organisation_id, []).append(job)
    sent = 0
    for jobs in by_org.values():
        organisation = jobs[0].organisation
        with transaction.atomic():
            if Notification.objects.filter(
                organisation=organisation, kind=NOTICE_KIND, object_id=withdrawal.public_id
            ).exists():
                continue
            notify_event(
                organisation=organisation,
                kind=NOTICE_KIND,
                subject=f"Data in {withdrawal.from_version.dataset.name} that your models were trained on "
                "was withdrawn by its contributor",
                payload={
                    "withdrawal": withdrawal.public_id,
                    "dataset_version": withdrawal.from_version.public_id,
                    "successor_version": withdrawal.to_version.public_id if withdrawal.to_version else None,
                    "jobs": [job.public_id for job in jobs],
                },
                object_type="contribution_withdrawal",
                object_id=withdrawal.public_id,
            )
        sent += 1
    return sent


@work_handler(NOTICE_WORK)
def _notice(item: WorkItem) -> None:
    withdrawal_notify(withdrawal_id=int(item.ref))
