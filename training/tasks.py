"""Training's Celery side.

Jobs and base validations run as leased work items on queue ``training``
(``common.run_work`` runs them); importing the launcher and the bases service
here registers their handlers in every worker. The sweep fails jobs whose work
item gave up (a worker died on every attempt) and removes working directories
that dead workers left behind.
"""

from __future__ import annotations

import shutil

from celery import shared_task

from training import (  # register the training.job and training.takedown_job handlers
    launcher,
    takedown,
    withdrawal,  # registers the training.withdrawal_notice handler
)
from training.models import FINAL_STATES, TrainingJob
from training.services import (
    bases,  # noqa: F401 - registers the training.base_validate handler
    serving,  # noqa: F401 - registers the training.inference handler (queue serving)
)
from training.services.jobs import job_reconcile_lost


@shared_task(name="training.sweep_jobs", ignore_result=True)
def sweep_jobs() -> int:
    lost = job_reconcile_lost()
    takedown.takedown_sweep()  # what a takedown left undone (a lost doorbell, a late artifact)
    withdrawal.withdrawal_sweep()  # a withdrawal's notice to artifact holders, if its bell was lost
    for path in launcher.work_root().glob("job-*-*"):
        job_id = path.name.split("-")[1]
        if job_id.isdigit() and TrainingJob.objects.filter(pk=int(job_id), state__in=FINAL_STATES).exists():
            shutil.rmtree(path, ignore_errors=True)
    return len(lost)
