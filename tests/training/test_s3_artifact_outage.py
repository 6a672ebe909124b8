"""Crash drill: the S3 endpoint taken away in the middle of a job's multipart artifact upload.

The job runs in this process through the launcher and the real sandbox (as
``test_lifecycle.py``), with blobs in moto's S3 and KEKs in its KMS behind a proxy
the drill can cut (``tests/s3_server.py`` ``CuttableProxy``). Parts are 5 MiB (S3's
smallest), one in flight, so the gpt2-tiny archive goes up in several parts; the
drill cuts the endpoint right after the first part is stored (botocore's
``after-call`` event on ``UploadPart``, then a real connection refusal for every
call after it). s3transfer's own abort cannot reach the server either, so the cut
leaves an unfinished upload behind, as a real outage would.

What must hold: the attempt fails and the job's work item stays queued (the job is
not failed, nothing is recorded as released); once the endpoint is back, the retry
trains again and stores the artifact whole, which opens and matches the signed
receipt file by file; usage is counted once; and no unfinished multipart upload is
left in the bucket (the complete put aborted the cut one).
"""

from __future__ import annotations

import hashlib
import io
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]  # untyped

from chaos.exposure import unfinished_uploads
from common import s3
from common.blobs import blob_store
from common.models import WorkItem, WorkState
from common.work import work_run
from custody.models import UsageRecord
from tests.s3_server import CuttableProxy, MotoServer, admin_client
from tests.training.conftest import TINY_HP
from training.artifacts import artifact_bytes
from training.models import FINAL_STATES, JobState, TrainingJob
from training.services.jobs import WORK_KIND

pytestmark = pytest.mark.s3

SMALLEST_PART = 5 << 20  # S3 refuses a part under 5 MiB that is not the last


@pytest.fixture(scope="module")
def moto_server() -> Iterator[MotoServer]:
    """A moto server of this module's own (it overrides the session's).

    After the cut, moto's state dump (``/moto-api/data.json``), which other tests scan for
    plaintext, answers 500 for the rest of the server's life (a moto bug, seen with moto's
    multipart parts), so the cut happens on a server nobody else uses.
    """
    pytest.importorskip("moto.server", reason="needs moto[s3,kms] and flask from the dev lock (make setup)")
    server = MotoServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _work_dir(settings, tmp_path: Path) -> Path:
    settings.TRAINING_WORK_DIR = tmp_path / "training-work"
    settings.TRAINING_WALL_SECONDS = 300
    settings.TRAINING_MEMORY_BYTES = 4 * 1024**3
    settings.TRAINING_CANARY_CANDIDATES = 31
    return settings.TRAINING_WORK_DIR


@pytest.fixture
def through_proxy(s3_kms_settings, s3_proxy: CuttableProxy, monkeypatch: pytest.MonkeyPatch) -> CuttableProxy:
    s3_kms_settings.S3_ENDPOINT_URL = s3_proxy.endpoint
    s3_kms_settings.KMS_ENDPOINT_URL = s3_proxy.endpoint
    s3_kms_settings.AWS_MAX_ATTEMPTS = 2  # the drill waits on botocore's backoff otherwise
    monkeypatch.setattr(s3, "PART_BYTES", SMALLEST_PART)
    monkeypatch.setattr(
        s3,
        "TRANSFER",
        TransferConfig(
            multipart_threshold=SMALLEST_PART,
            multipart_chunksize=SMALLEST_PART,
            max_concurrency=1,  # parts in order, so the cut falls after the first one
            use_threads=True,
        ),
    )
    return s3_proxy


@contextmanager
def cut_after_first_part(proxy: CuttableProxy) -> Iterator[list[str]]:
    """Take the endpoint away as soon as S3 answered the first UploadPart; yields the parts answered
    (a part already on the wire when the cut came may be answered too)."""
    client = blob_store().client  # type: ignore[attr-defined]  # the S3 store's (cached) client
    sent: list[str] = []

    def after_part(**kwargs: object) -> None:
        sent.append("part")
        if len(sent) == 1:
            proxy.down()

    client.meta.events.register("after-call.s3.UploadPart", after_part, unique_id="drill-cut")
    try:
        yield sent
    finally:
        client.meta.events.unregister("after-call.s3.UploadPart", unique_id="drill-cut")


def run_job_once(job: TrainingJob) -> str:
    item = WorkItem.objects.get(kind=WORK_KIND, ref=str(job.pk))
    return work_run(item_id=item.pk, owner="drill")


@pytest.mark.timeout(900)  # two training attempts; minutes on a loaded machine
def test_a_cut_mid_artifact_upload_retries_whole_and_leaves_no_unfinished_upload(
    through_proxy, moto_server, s3_bucket, submit, grant
):
    job = submit(grant, hyperparameters=dict(TINY_HP))
    with cut_after_first_part(through_proxy) as sent:
        assert run_job_once(job) == "retrying"
    assert sent  # a part was stored, then the endpoint was gone
    job.refresh_from_db()
    assert job.state not in FINAL_STATES and not job.artifact_blob_key
    item = WorkItem.objects.get(kind=WORK_KIND, ref=str(job.pk))
    assert (item.state, item.attempts) == (WorkState.QUEUED, 1)
    bucket = admin_client(moto_server, "s3")
    artifact_key = f"sealroom/training/artifacts/job-{job.pk}.tar.gz"
    assert [u.split(" ")[0] for u in unfinished_uploads(bucket, s3_bucket)] == [
        f"s3://{s3_bucket}/{artifact_key}"
    ]
    assert "Contents" not in bucket.list_objects_v2(Bucket=s3_bucket, Prefix=artifact_key)

    through_proxy.up()
    assert run_job_once(job) == "done"
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
    assert job.artifact_size > SMALLEST_PART  # it did go up in parts
    assert unfinished_uploads(bucket, s3_bucket) == []

    # The stored archive is whole: every file matches the signed receipt.
    listed = {f["name"]: f["sha256"] for f in job.receipt["receipt"]["artifact_files"]}
    with tarfile.open(fileobj=io.BytesIO(artifact_bytes(job)), mode="r:gz") as tar:
        stored = {
            member.name.removeprefix("model/"): hashlib.sha256(tar.extractfile(member).read()).hexdigest()  # type: ignore[union-attr]
            for member in tar
            if member.isfile() and member.name != "model/README.md"
        }
    assert stored == listed
    kinds = sorted(UsageRecord.objects.filter(grant=job.grant).values_list("kind", flat=True))
    assert kinds == ["job_started", "tokens_trained"]


class TestAbandonedUploadSweep:
    def test_aborts_every_unfinished_upload_under_the_prefix_and_nothing_outside_it(
        self, s3_kms_settings, moto_server, s3_bucket
    ):
        # moto dates every multipart upload 2010-11-10, so the age threshold itself cannot be
        # exercised here: on moto any age passes. What is checked is what the sweep touches.
        client = admin_client(moto_server, "s3")
        uploads = {}
        for key in ("sealroom/artifacts/cut", "elsewhere/not-ours"):
            uploads[key] = upload = client.create_multipart_upload(Bucket=s3_bucket, Key=key)["UploadId"]
            client.upload_part(Bucket=s3_bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"x" * 10)
        store: Any = blob_store()
        assert store.abandoned_uploads_abort(older_than=timedelta(hours=1)) == ["artifacts/cut"]
        assert [u.split(" ")[0] for u in unfinished_uploads(client, s3_bucket)] == [
            f"s3://{s3_bucket}/elsewhere/not-ours"
        ]
        assert store.abandoned_uploads_abort() == []
        # The session's moto server must not keep an open upload: its /moto-api/data.json, which
        # other tests scan, answers 500 while one exists (a moto bug).
        client.abort_multipart_upload(
            Bucket=s3_bucket, Key="elsewhere/not-ours", UploadId=uploads["elsewhere/not-ours"]
        )
        assert unfinished_uploads(client, s3_bucket) == []

    def test_the_hourly_task_sweeps_the_configured_store(self, s3_kms_settings, moto_server, s3_bucket):
        from common.tasks import blob_uploads_sweep

        client = admin_client(moto_server, "s3")
        upload = client.create_multipart_upload(Bucket=s3_bucket, Key="sealroom/exports/cut")["UploadId"]
        client.upload_part(
            Bucket=s3_bucket, Key="sealroom/exports/cut", UploadId=upload, PartNumber=1, Body=b"x"
        )
        assert blob_uploads_sweep() == ["exports/cut"]
        assert unfinished_uploads(client, s3_bucket) == []
