"""Receipts: signed by the platform, verified offline (command and the docs' few lines), tampering caught."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from common.signing import signing_key_provider
from training.models import JobState, TrainingJob
from training.receipts import receipt_body, receipt_problems, receipt_sign


@pytest.fixture
def finished_job(submit, grant, sealed_version) -> TrainingJob:
    job = submit(grant)
    data = b"weights"
    job.artifact_files = [
        {"name": "model.safetensors", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    ]
    job.tokens_trained = 123
    job.state = JobState.SUCCEEDED
    job.receipt = receipt_sign(receipt_body(job, version=sealed_version))
    job.save()
    return job


def write(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "receipt.json"
    path.write_text(json.dumps(document))
    return path


def archive(tmp_path: Path, files: dict[str, bytes]) -> Path:
    path = tmp_path / "model.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"model/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


class TestVerifyReceipt:
    def test_a_good_receipt_and_archive_verify(self, finished_job, tmp_path, sealed_version):
        out = io.StringIO()
        path = write(tmp_path, finished_job.receipt)
        call_command(
            "verify_receipt",
            str(path),
            "--artifact",
            str(archive(tmp_path, {"model.safetensors": b"weights"})),
            stdout=out,
        )
        assert "receipt valid" in out.getvalue()
        assert finished_job.receipt["receipt"]["merkle_root"] == sealed_version.merkle_root

    def test_a_tampered_receipt_is_refused(self, finished_job, tmp_path):
        document = json.loads(json.dumps(finished_job.receipt))
        document["receipt"]["platform_tokens_trained"] = 1
        with pytest.raises(CommandError, match="signature does not match"):
            call_command("verify_receipt", str(write(tmp_path, document)))

    def test_a_receipt_signed_by_another_key_is_refused(self, finished_job, tmp_path, settings):
        document = finished_job.receipt
        settings.KEY_DIR = tmp_path / "other-keys"
        with pytest.raises(CommandError, match="not one of the trusted keys"):
            call_command("verify_receipt", str(write(tmp_path, document)))

    def test_an_archive_that_differs_is_refused(self, finished_job, tmp_path):
        path = write(tmp_path, finished_job.receipt)
        with pytest.raises(CommandError, match="sha256 differs"):
            call_command(
                "verify_receipt",
                str(path),
                "--artifact",
                str(archive(tmp_path, {"model.safetensors": b"other"})),
            )

    def test_an_explicit_public_key_is_the_only_one_trusted(self, finished_job, tmp_path):
        pem = tmp_path / "key.pem"
        pem.write_text(signing_key_provider().current().public_pem())
        call_command("verify_receipt", str(write(tmp_path, finished_job.receipt)), "--public-key", str(pem))
        other = tmp_path / "other.pem"
        from common.signing import LocalSigningKeyProvider

        other.write_text(LocalSigningKeyProvider(tmp_path / "k2").current().public_pem())
        with pytest.raises(CommandError, match="signature does not match"):
            call_command(
                "verify_receipt", str(write(tmp_path, finished_job.receipt)), "--public-key", str(other)
            )

    def test_the_documented_lines_of_python_verify_it(self, finished_job):
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        document = finished_job.receipt
        public_key = load_pem_public_key(signing_key_provider().current().public_pem().encode())
        assert isinstance(public_key, Ed25519PublicKey)
        message = json.dumps(
            document["receipt"], sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
        public_key.verify(base64.b64decode(document["signature"]), message)
        with pytest.raises(InvalidSignature):
            public_key.verify(base64.b64decode(document["signature"]), message.replace(b"123", b"124"))

    def test_problems_name_a_missing_receipt(self):
        assert receipt_problems({"nothing": 1}, public_keys={}) == [
            "not a receipt document (no 'receipt' object)"
        ]
