"""The whole path on S3 and KMS, through a real Celery worker: upload to a verified download.

A worker process of its own runs with ``SEALROOM_BLOB_URL`` (moto's S3 on loopback)
and ``SEALROOM_KEY_PROVIDER=kms`` (moto's KMS), as a production worker would be
configured; this process (the web side, and the live server behind the SDK) has the
same settings. Upload parts, staged batches, shards, KEK records and the job's
artifact all go to the bucket; nothing lands in the local blob or key directories.
The worker ingests, the provider seals, the worker trains a job, the trainer's SDK
downloads the artifact and verifies it against the signed receipt, and the audit
log's checkpoints, exported to the bucket, verify against the chain. Then every
version of every object in the bucket, and moto's whole state (KMS keys included),
is scanned for the sentinel planted in every record, with chaos/exposure.py's
unwrapping (the artifact is a tar.gz; a base64 or hex copy would be found too).
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection
from sealroom import Client

from chaos.exposure import ExposureScan, SentinelFinder, scan_buckets, unfinished_uploads
from common.audit_checkpoints import checkpoint_tick
from common.audit_verify import audit_verify
from common.processes import wait_until
from common.signing import signing_key_provider
from custody import services as custody
from custody.models import GrantPurpose
from custody.services._keys import system_grant
from tests.conftest import make_token
from tests.grants import grant_for_test
from tests.plugins.worker import _SESSION_WORKERS, WORKER_OUTPUT
from tests.s3_server import REGION, MotoServer, admin_client, moto_state
from tests.sdk.conftest import TRAINER_SCOPES
from tests.training.conftest import TINY_HP
from tests.training.test_worker_jobs import recover, sealed
from tests.worker.harness import TEST_LEASE_SECONDS, WorkerProcess
from training import services
from training.models import FINAL_STATES, BaseModel, JobState, TrainingJob

pytestmark = [pytest.mark.s3, pytest.mark.worker]

# A word the desensitizer's taggers mostly leave alone (checked below): one they read as a name is
# masked before it is stored, and a scan finding it nowhere would prove nothing.
SENTINEL = "sentinel-qzkwtrvb-bcd"
RECORDS = [{"text": f"Line {i}: the shipment {SENTINEL} for depot {i % 7} left on time."} for i in range(48)]


@pytest.fixture
def s3_kms_worker(
    transactional_db: None,
    celery_test_broker: Path | None,
    s3_kms_settings,
    moto_server: MotoServer,
    tmp_path: Path,
) -> Iterator[WorkerProcess]:
    """A Celery worker on the test database and broker whose blobs and KEKs live in S3 and KMS."""
    for other in _SESSION_WORKERS:  # only this worker may take the test's work
        if other.alive:
            other.stop()
    dirs = {name: tmp_path / name for name in ("blobs", "keys", "audit-export", "gates", "work")}
    for path in dirs.values():
        path.mkdir()
    # This process shares the signing keys (the receipt's), and must not write blobs locally either.
    s3_kms_settings.BLOB_DIR = dirs["blobs"]
    s3_kms_settings.KEY_DIR = dirs["keys"]
    s3_kms_settings.AUDIT_EXPORT_DIR = dirs["audit-export"]
    s3_kms_settings.TRAINING_WORK_DIR = dirs["work"]
    s3_kms_settings.WORK_REQUEUE_AFTER_SECONDS = 5
    signing_key_provider().current()  # made once here, not raced by two processes
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.worker.settings",
        "SEALROOM_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "SEALROOM_WORK_LEASE_SECONDS": str(TEST_LEASE_SECONDS),
        "SEALROOM_TEST_GATE_DIR": str(dirs["gates"]),
        "SEALROOM_BLOB_DIR": str(dirs["blobs"]),
        "SEALROOM_KEY_DIR": str(dirs["keys"]),
        "SEALROOM_AUDIT_EXPORT_DIR": str(dirs["audit-export"]),
        "SEALROOM_TRAINING_WORK_DIR": str(dirs["work"]),
        "SEALROOM_BLOB_URL": s3_kms_settings.BLOB_URL,
        "SEALROOM_S3_ENDPOINT_URL": moto_server.endpoint,
        "SEALROOM_KEY_PROVIDER": "kms",
        "SEALROOM_KMS_KEY_ID": s3_kms_settings.KMS_KEY_ID,
        "SEALROOM_KMS_ENDPOINT_URL": moto_server.endpoint,
        "SEALROOM_AWS_REGION": REGION,
        "SEALROOM_AWS_MAX_ATTEMPTS": "3",
        "PYTHONUNBUFFERED": "1",
    }
    if celery_test_broker is not None:
        env["SEALROOM_TEST_BROKER_DIR"] = str(celery_test_broker)
    log_dir = WORKER_OUTPUT / "s3-kms"
    shutil.rmtree(log_dir, ignore_errors=True)
    log_dir.mkdir(parents=True)
    worker = WorkerProcess(cwd=Path(__file__).resolve().parents[2], env=env, log_dir=log_dir)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def finished(job_id: int) -> TrainingJob | None:
    recover()
    job = TrainingJob.objects.get(pk=job_id)
    return job if job.state in FINAL_STATES else None


@pytest.mark.timeout(1200)
def test_upload_to_verified_download_on_s3_and_kms_leaves_only_ciphertext(
    s3_kms_worker, s3_kms_settings, moto_server, s3_bucket, live_server, alice, acme, bob, bolt, tmp_path
):
    version = sealed(alice, acme, RECORDS)  # uploaded here, ingested by the worker, sealed here
    # The sentinel survives desensitization in the sealed records (the taggers are contextual and
    # may mask it in a few), so finding it nowhere in the bucket below means something.
    review = system_grant(version, GrantPurpose.REVIEW)
    stream = custody.grant_stream_open(grant=review, consumer_ref="test", purpose="review")
    texts = [record["text"]["text"] for batch in stream for record in batch]
    assert len(texts) == len(RECORDS)
    assert sum(SENTINEL in text for text in texts) >= len(RECORDS) // 2, texts[:4]
    grant = grant_for_test(version, bolt, max_epochs=3, weights_may_leave=True, gate_max_exposure=30.0)
    job = services.job_submit(
        actor=bob,
        organisation=bolt,
        grant=grant,
        request=services.JobRequest(
            template="causal_lm",
            base=BaseModel.objects.get(name="gpt2-tiny", owner=None),
            hyperparameters={**TINY_HP, "epochs": 1, "max_seq_len": 32},
        ),
    )
    ended = wait_until(lambda: finished(job.pk), what="the training job", timeout=900, interval=1.0)
    assert ended is not None
    job = ended
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason, s3_kms_worker.log_tail())

    # The artifact is an object in the bucket, and the SDK's download verifies it against the receipt.
    s3 = admin_client(moto_server, "s3")
    artifact = s3.head_object(Bucket=s3_bucket, Key=f"sealroom/{job.artifact_blob_key}")
    assert artifact["ContentLength"] == job.artifact_size
    client = Client(token=make_token(bob, bolt, TRAINER_SCOPES), base_url=live_server.url)
    archive = client.download_artifact(job.public_id, tmp_path / "download")  # raises unless it verifies
    assert archive.stat().st_size == job.artifact_size
    # The audit export goes to the bucket too (every machine's copy in one place), and verifies.
    checkpoint_tick()
    report = audit_verify()
    assert report.ok and report.exported_checkpoints_checked >= 1, report.summary_lines()
    keys = {entry["Key"] for entry in s3.list_objects_v2(Bucket=s3_bucket).get("Contents", [])}
    assert "sealroom/audit-export/public-keys.json" in keys
    assert any(key.startswith("sealroom/shards/") for key in keys), keys
    assert f"sealroom/custody-keys/kek-{version.key_name}.json" in keys

    # Nothing went to the local blob or key directories (signing keys are not custody's).
    assert list(Path(s3_kms_settings.BLOB_DIR).iterdir()) == []
    assert list(Path(s3_kms_settings.AUDIT_EXPORT_DIR).iterdir()) == []
    assert not (Path(s3_kms_settings.KEY_DIR) / "custody").exists()

    # No plaintext in any version of any object, in moto's state (KMS too), nor a stray upload.
    scan = ExposureScan(SentinelFinder([SENTINEL, "zqcontrolsentinel"]))
    assert scan_buckets(scan) >= len(keys)  # every object, and older versions of replaced ones
    assert [hit for hit in scan.hits if hit.sentinel == SENTINEL] == []
    state = moto_state(moto_server)
    assert b'"kms"' in state
    assert scan.scan("moto", "moto-api/data.json", state) == set()
    assert unfinished_uploads(s3, s3_bucket) == []

    # The scan would have found one: a control planted in plaintext, then scanned the same way.
    s3.put_object(Bucket=s3_bucket, Key="sealroom/control.gz", Body=gzip.compress(b"a zqcontrolsentinel"))
    control = ExposureScan(SentinelFinder(["zqcontrolsentinel"]))
    scan_buckets(control)
    assert [hit.place.split("@")[0] for hit in control.hits] == [f"s3://{s3_bucket}/sealroom/control.gz"]
