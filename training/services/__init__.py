"""Training's writes: jobs and uploaded base models."""

from training.services.bases import base_upload, base_validate
from training.services.jobs import JobRequest, job_cancel, job_finish, job_reconcile_lost, job_submit

__all__ = [
    "JobRequest",
    "base_upload",
    "base_validate",
    "job_cancel",
    "job_finish",
    "job_reconcile_lost",
    "job_submit",
]
