"""Reading a job's stored artifact: the plain download, or the copy kept encrypted in custody."""

from __future__ import annotations

from typing import BinaryIO

from common.blobs import blob_store
from custody import services as custody
from custody.models import DatasetVersion
from training.models import TrainingJob


def artifact_stream(job: TrainingJob) -> BinaryIO:
    """The downloadable archive (only for artifacts that may leave custody)."""
    if job.artifact_encrypted:
        raise ValueError("this artifact is kept in custody")
    return blob_store().open(job.artifact_blob_key)


def artifact_bytes(job: TrainingJob) -> bytes:
    """The archive's bytes, decrypted by custody when the weights are kept there."""
    if job.artifact_encrypted:
        version = DatasetVersion.objects.get(pk=job.grant.version_id)
        return custody.artifact_open(version=version, name=f"training-job-{job.pk}")
    with artifact_stream(job) as handle:
        return handle.read()
