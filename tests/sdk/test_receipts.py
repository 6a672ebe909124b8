"""Artifacts and receipts: download, then verify offline against the platform's published keys.

The released job is made from rows (no worker): its archive is built by the launcher's own
``_artifact_archive`` and its receipt signed by ``training.receipts`` with the platform's key,
as a finished job's are. tests/sdk/test_journey_worker.py runs a real job end to end.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.utils import timezone
from sealroom import Client, ReceiptInvalid, verify_receipt
from sealroom.receipts import canonical

from common.blobs import blob_store
from common.signing import signing_key_provider
from tests.grants import grant_for_test
from tests.sdk.conftest import run_cli, run_cli_process
from training.launcher import _artifact_archive, artifact_blob_key
from training.models import BaseModel, JobState, TrainingJob
from training.receipts import receipt_body, receipt_problems, receipt_sign


@pytest.fixture
def released_job(tmp_path: Path, sealed_rows, bob, bolt) -> TrainingJob:
    version = sealed_rows()
    grant = grant_for_test(version, bolt, weights_may_leave=True, job_templates=["causal_lm"], max_jobs=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
    (out / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    archive, files = _artifact_archive(out)
    job = TrainingJob.objects.create(
        organisation=bolt,
        submitted_by=bob,
        grant=grant,
        template="causal_lm",
        base=BaseModel.objects.get(name="gpt2-tiny", owner=None),
        state=JobState.SUCCEEDED,
        tokens_trained=1234,
        gate={"passed": True, "exposure": 1.5, "verbatim": 0, "max_exposure": 10.0},
        finished_at=timezone.now(),
    )
    key = artifact_blob_key(job)
    blob_store().put(key, io.BytesIO(archive))
    job.artifact_blob_key, job.artifact_files, job.artifact_size = key, files, len(archive)
    job.receipt = receipt_sign(receipt_body(job, version=version))
    job.save()
    return job


def tamper(document: dict, **changes) -> dict:
    changed = json.loads(json.dumps(document))
    changed["receipt"].update(changes)
    return changed


class TestDownload:
    def test_downloads_the_archive_and_receipt_and_verifies_both(
        self, trainer: Client, released_job, tmp_path
    ):
        archive = trainer.download_artifact(released_job.public_id, tmp_path / "dl")
        assert archive.name == f"job-{released_job.public_id}.tar.gz"
        with tarfile.open(archive) as tar:
            assert sorted(tar.getnames()) == ["model/config.json", "model/model.safetensors"]
        receipt = json.loads((tmp_path / "dl" / f"job-{released_job.public_id}-receipt.json").read_text())
        assert receipt == released_job.receipt
        result = trainer.verify_receipt(receipt, artifact=archive)
        assert (result.job_id, result.archive_checked) == (released_job.public_id, True)

    def test_a_job_not_finished_has_no_artifact(self, trainer: Client, released_job, tmp_path):
        from sealroom import Conflict

        TrainingJob.objects.filter(pk=released_job.pk).update(state=JobState.RUNNING)
        with pytest.raises(Conflict) as caught:
            trainer.download_artifact(released_job.public_id, tmp_path)
        assert caught.value.code == "training.artifact_not_ready"


class TestVerify:
    def test_the_published_keys_are_the_platforms_signing_keys(self, trainer: Client, released_job):
        published = trainer.public_keys()
        assert published == signing_key_provider().public_keys()
        assert released_job.receipt["key_id"] in published
        assert receipt_problems(released_job.receipt, public_keys=published) == []

    def test_an_altered_receipt_fails(self, trainer: Client, released_job):
        keys = trainer.public_keys()
        with pytest.raises(ReceiptInvalid, match="signature does not match"):
            verify_receipt(tamper(released_job.receipt, platform_tokens_trained=1), keys)

    def test_a_receipt_signed_by_another_key_fails_even_with_that_key_inside(self, trainer, released_job):
        forger = Ed25519PrivateKey.generate()
        document = tamper(released_job.receipt, weights_left_custody=True)
        document["public_key"] = (
            forger.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        document["key_id"] = "f0rged"
        document["signature"] = base64.b64encode(forger.sign(canonical(document["receipt"]))).decode()
        with pytest.raises(ReceiptInvalid, match="not one of the trusted keys"):
            verify_receipt(document, trainer.public_keys())

    def test_an_archive_file_that_differs_from_the_receipt_fails(self, trainer, released_job, tmp_path):
        out = tmp_path / "other"
        out.mkdir()
        (out / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2}))
        (out / "model.safetensors").write_bytes(b"not the trained weights")
        archive, _files = _artifact_archive(out)
        (tmp_path / "other.tar.gz").write_bytes(archive)
        with pytest.raises(ReceiptInvalid, match=r"model\.safetensors: sha256 differs"):
            verify_receipt(released_job.receipt, trainer.public_keys(), artifact=tmp_path / "other.tar.gz")


class TestCli:
    def test_download_then_verify_offline_with_exported_keys(
        self, live_server, released_job, bob, bolt, tmp_path
    ):
        from tests.conftest import make_token

        token = make_token(bob, bolt, ["read"])
        job = released_job.public_id
        done = run_cli("artifacts", "download", job, "-o", str(tmp_path), url=live_server.url, token=token)
        assert done.returncode == 0, done.stderr
        assert "receipt valid" in done.stdout
        exported = run_cli("keys", "export", "-o", str(tmp_path / "keys.json"), url=live_server.url)
        assert exported.returncode == 0, exported.stderr
        receipt = tmp_path / f"job-{job}-receipt.json"
        archive = tmp_path / f"job-{job}.tar.gz"
        # Offline: the URL leads nowhere; only the exported keys are trusted.
        offline = ["receipts", "verify", str(receipt), "--keys", str(tmp_path / "keys.json")]
        valid = run_cli_process(*offline, "--artifact", str(archive), url="http://127.0.0.1:9")
        assert valid.returncode == 0, valid.stderr
        assert f"receipt valid: job {job}" in valid.stdout
        assert "archive matches" in valid.stdout
        receipt.write_text(json.dumps(tamper(json.loads(receipt.read_text()), job="job_0000000000000000")))
        invalid = run_cli(*offline, url="http://127.0.0.1:9")
        assert invalid.returncode == 1
        assert "signature does not match" in invalid.stderr

    def test_jobs_follow_reports_a_finished_job_and_exits_1_on_a_failed_one(
        self, live_server, released_job, bob, bolt
    ):
        from tests.conftest import make_token

        token = make_token(bob, bolt, ["read"])
        done = run_cli("jobs", "follow", released_job.public_id, url=live_server.url, token=token)
        assert done.returncode == 0, done.stderr
        assert f"job {released_job.public_id} succeeded: 1,234 platform tokens trained" in done.stdout
        assert "release gate passed" in done.stdout
        TrainingJob.objects.filter(pk=released_job.pk).update(
            state=JobState.FAILED, failure_code="training.gate_failed", failure_reason="The model memorized."
        )
        failed = run_cli("jobs", "follow", released_job.public_id, url=live_server.url, token=token)
        assert failed.returncode == 1
        assert "training.gate_failed: The model memorized." in failed.stderr
