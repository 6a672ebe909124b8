"""The audit export in the S3 bucket (blobs in S3): an object per checkpoint, checked as the file is.

With ``SEALROOM_BLOB_URL`` set, every machine exports to the same bucket folder,
``audit-export/checkpoints/<seq>.json`` and ``audit-export/public-keys.json``, on a
real S3 API server (moto's, on loopback). The integrity promises of the local file
hold there too: the export verifies with the public key alone, a seq is written once
and never rewritten (the versioned bucket would keep a second version), a lost
object is reported and re-exported, an altered one fails its signature, and a tail
deleted from the database with its checkpoint rows is caught by the bucket's copy.
"""

from __future__ import annotations

import base64
import io
import json
from io import StringIO
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.core.management import call_command

from common.audit_checkpoints import checkpoint_export, checkpoint_message, checkpoint_tick, export_read
from common.audit_verify import audit_verify
from common.models import AuditChainHead, AuditCheckpoint, AuditEvent
from tests.common.test_audit import as_database_owner, first_reason, record
from tests.s3_server import admin_client

pytestmark = pytest.mark.s3

FOLDER = "sealroom/audit-export/checkpoints/"


@pytest.fixture
def bucket_export(settings, moto_server, s3_bucket, tmp_path: Path):
    """Blobs (and so the audit export) in the test's bucket; checkpoints every 5 events."""
    settings.BLOB_BACKEND = "s3"
    settings.BLOB_URL = f"s3://{s3_bucket}/sealroom"
    settings.S3_ENDPOINT_URL = moto_server.endpoint
    settings.AWS_MAX_ATTEMPTS = 2
    settings.AUDIT_EXPORT_DIR = tmp_path / "audit-export"
    settings.AUDIT_CHECKPOINT_EVERY = 5
    return admin_client(moto_server, "s3"), s3_bucket


def versions(s3, bucket: str, prefix: str = FOLDER) -> dict[str, int]:
    listing = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    counts: dict[str, int] = {}
    for entry in listing.get("Versions", []):
        counts[entry["Key"]] = counts.get(entry["Key"], 0) + 1
    return counts


def body(s3, bucket: str, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


class TestAuditExportInTheBucket:
    def test_each_checkpoint_is_an_object_that_verifies_with_the_public_key_alone(
        self, db, bucket_export, settings, django_capture_on_commit_callbacks
    ):
        s3, bucket = bucket_export
        with django_capture_on_commit_callbacks(execute=True):
            record(10)
        assert sorted(versions(s3, bucket)) == [f"{FOLDER}{5:020d}.json", f"{FOLDER}{10:020d}.json"]
        keys = json.loads(body(s3, bucket, "sealroom/audit-export/public-keys.json"))["keys"]
        for seq in (5, 10):
            line = json.loads(body(s3, bucket, f"{FOLDER}{seq:020d}.json"))
            public = serialization.load_pem_public_key(keys[line["key_id"]].encode())
            assert isinstance(public, Ed25519PublicKey)
            message = checkpoint_message(
                seq=line["seq"], hash=line["hash"], key_id=line["key_id"], signed_at=line["signed_at"]
            )
            public.verify(base64.b64decode(line["signature"]), message)  # raises if invalid
            assert line["hash"] == AuditEvent.objects.get(seq=seq).hash
        assert not Path(settings.AUDIT_EXPORT_DIR).exists()  # nothing written on this machine
        assert AuditCheckpoint.objects.filter(exported_at__isnull=True).count() == 0

    def test_exporting_again_never_rewrites_an_object(
        self, db, bucket_export, django_capture_on_commit_callbacks
    ):
        s3, bucket = bucket_export
        with django_capture_on_commit_callbacks(execute=True):
            record(10)
        assert checkpoint_export() == []
        assert checkpoint_export() == []
        assert set(versions(s3, bucket).values()) == {1}  # the versioned bucket kept one version each
        assert [c.seq for c in export_read().checkpoints] == [5, 10]

    def test_the_verify_command_reads_the_bucket_and_finds_the_chain_intact(
        self, db, bucket_export, django_capture_on_commit_callbacks
    ):
        _s3, bucket = bucket_export
        with django_capture_on_commit_callbacks(execute=True):
            record(7)
        out = StringIO()
        call_command("audit_verify", stdout=out)
        assert "checkpoints checked: 1 in the database, 1 in the export" in out.getvalue()
        assert f"s3://{bucket}/sealroom/audit-export/checkpoints/" in out.getvalue()
        assert out.getvalue().rstrip().endswith("chain intact")

    def test_a_lost_object_is_reported_then_exported_again(
        self, db, bucket_export, django_capture_on_commit_callbacks
    ):
        s3, bucket = bucket_export
        with django_capture_on_commit_callbacks(execute=True):
            record(10)
        s3.delete_object(Bucket=bucket, Key=f"{FOLDER}{10:020d}.json")
        report = audit_verify()
        assert not report.ok
        assert "checkpoint at seq 10 was exported but is missing from the export" in first_reason(report)
        with django_capture_on_commit_callbacks(execute=True):
            checkpoint_tick()
        assert [c.seq for c in export_read().checkpoints] == [5, 10]
        assert audit_verify().ok

    def test_an_altered_object_fails_its_signature(
        self, db, bucket_export, django_capture_on_commit_callbacks
    ):
        s3, bucket = bucket_export
        with django_capture_on_commit_callbacks(execute=True):
            record(5)
        key = f"{FOLDER}{5:020d}.json"
        line = json.loads(body(s3, bucket, key))
        line["hash"] = "0" * 64
        altered = json.dumps(line, sort_keys=True, separators=(",", ":")).encode() + b"\n"
        s3.put_object(Bucket=bucket, Key=key, Body=io.BytesIO(altered))
        report = audit_verify()
        assert not report.ok
        assert report.first_bad_seq == 5
        assert "exported checkpoint signature does not verify" in first_reason(report)

    def test_an_object_holding_another_seq_is_reported_unreadable(
        self, db, bucket_export, django_capture_on_commit_callbacks
    ):
        s3, bucket = bucket_export
        with django_capture_on_commit_callbacks(execute=True):
            record(10)
        # The seq-5 line copied over seq 10's object: the line is valid, but not where it says it is.
        s3.put_object(
            Bucket=bucket, Key=f"{FOLDER}{10:020d}.json", Body=body(s3, bucket, f"{FOLDER}{5:020d}.json")
        )
        exported = export_read()
        assert [c.seq for c in exported.checkpoints] == [5]
        assert exported.malformed_lines == [10]
        assert not audit_verify().ok

    def test_a_tail_deleted_with_its_checkpoint_rows_is_caught_by_the_bucket_copy(
        self, db, bucket_export, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            record(12)
        seventh = AuditEvent.objects.get(seq=7)
        with as_database_owner():
            AuditEvent.objects.filter(seq__gt=7).delete()
            AuditCheckpoint.objects.filter(seq__gt=7).delete()
            AuditChainHead.objects.update(seq=7, hash=seventh.hash, last_checkpoint_seq=5)
        report = audit_verify()
        assert not report.ok
        assert report.first_bad_seq == 8
        assert "tail truncated" in first_reason(report)
        assert "seq 10" in first_reason(report)
