"""The audit log: chain, signed checkpoints, export, verification, append-only trigger.

Tampering is done the way an intruder with database access would: plain
UPDATE and DELETE statements. On Postgres the append-only trigger refuses
those, so tests tamper as the database owner with
``session_replication_role = replica`` (DESIGN.md "Audit log").
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from common.audit import audit_record
from common.audit_checkpoints import checkpoint_export, checkpoint_tick, export_read
from common.audit_verify import VerifyReport, audit_verify
from common.models import AuditChainHead, AuditCheckpoint, AuditEvent
from tests.conftest import is_postgres

# The fields an intruder would move when swapping two rows (all but seq).
CONTENT_FIELDS = [
    "at",
    "actor_id",
    "actor_name",
    "organisation_id",
    "organisation_name",
    "action",
    "object_type",
    "object_id",
    "details",
    "prev_hash",
    "hash",
]


@contextmanager
def as_database_owner() -> Iterator[None]:
    """Bypass the append-only trigger on Postgres (owner only); a no-op on SQLite."""
    if not is_postgres():
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")


def record(count: int, *, start: int = 1) -> None:
    for n in range(start, start + count):
        audit_record(
            action="test.event",
            actor_name="alice",
            object_type="dataset",
            object_id=n,
            details={"n": n, "ip": "10.0.0.7", "note": "ok"},
        )


def first_reason(report: VerifyReport) -> str:
    assert report.first_problem is not None, "expected a problem"
    return report.first_problem.reason


def flip_first_byte(text: str) -> str:
    raw = bytearray(text.encode())
    raw[0] ^= 0x01
    return raw.decode()


def export_lines(export_dir: Path) -> list[dict[str, Any]]:
    path = export_dir / "checkpoints.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def every_five(settings):
    """Checkpoints every 5 events; after-commit callbacks run as if committed."""
    settings.AUDIT_CHECKPOINT_EVERY = 5
    return settings


@pytest.fixture
def committed(transactional_db):
    """Real commits (threads need them); audit rows removed as the owner before the flush."""
    yield
    with as_database_owner():
        AuditEvent.objects.all().delete()


class TestAuditRecord:
    def test_links_each_event_to_the_previous_one(self, db):
        record(3)
        events = list(AuditEvent.objects.order_by("seq"))
        assert [e.seq for e in events] == [1, 2, 3]
        assert events[0].prev_hash == "0" * 64
        assert events[1].prev_hash == events[0].hash
        assert events[2].prev_hash == events[1].hash
        head = AuditChainHead.objects.get()
        assert (head.seq, head.hash) == (3, events[2].hash)

    def test_hash_is_reproducible_from_the_documented_canonical_json(self, db):
        record(1)
        event = AuditEvent.objects.get()
        body = {
            "seq": event.seq,
            "at": event.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "actor_id": event.actor_id,
            "actor_name": event.actor_name,
            "organisation_id": event.organisation_id,
            "organisation_name": event.organisation_name,
            "action": event.action,
            "object_type": event.object_type,
            "object_id": event.object_id,
            "details": event.details,
            "prev_hash": event.prev_hash,
        }
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
        assert hashlib.sha256(canonical).hexdigest() == event.hash

    def test_an_action_that_fails_after_its_event_leaves_neither(self, db):
        record(2)
        head_before = AuditChainHead.objects.values("seq", "hash").get()
        with pytest.raises(RuntimeError), transaction.atomic():
            audit_record(action="test.doomed")
            raise RuntimeError("the audited action failed")
        assert not AuditEvent.objects.filter(action="test.doomed").exists()
        assert AuditChainHead.objects.values("seq", "hash").get() == head_before
        record(1, start=3)
        assert list(AuditEvent.objects.values_list("seq", flat=True)) == [1, 2, 3]
        assert audit_verify().ok

    def test_concurrent_writers_never_fork_the_chain(self, committed, every_five):
        def write(writer: int) -> None:
            try:
                for n in range(20):
                    with transaction.atomic():
                        audit_record(action="test.concurrent", details={"writer": writer, "n": n})
            finally:
                connection.close()

        with ThreadPoolExecutor(max_workers=4) as pool:
            for result in [pool.submit(write, writer) for writer in range(4)]:
                result.result()

        assert list(AuditEvent.objects.values_list("seq", flat=True)) == list(range(1, 81))
        report = audit_verify()
        assert report.ok, report.summary_lines()
        exported = [line["seq"] for line in export_lines(every_five.AUDIT_EXPORT_DIR)]
        assert sorted(exported) == list(range(5, 81, 5))


class TestAuditVerify:
    def test_an_untouched_log_verifies(self, db, every_five, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            record(12)
        report = audit_verify()
        assert report.ok, report.summary_lines()
        assert report.first_bad_seq is None
        assert (report.events_checked, report.last_seq, report.head_seq) == (12, 12, 12)
        assert (report.checkpoints_checked, report.exported_checkpoints_checked) == (2, 2)
        assert report.summary_lines()[-1] == "chain intact"

    def test_an_empty_log_verifies(self, db):
        report = audit_verify()
        assert report.ok
        assert report.events_checked == 0

    def test_walks_the_chain_in_chunks(self, db):
        record(23)
        report = audit_verify(chunk_size=4)
        assert report.ok
        assert report.events_checked == 23

    def test_flipping_one_byte_of_an_action_reports_that_seq(self, db):
        record(6)
        action = AuditEvent.objects.get(seq=4).action
        with as_database_owner():
            AuditEvent.objects.filter(seq=4).update(action=flip_first_byte(action))
        report = audit_verify()
        assert not report.ok
        assert report.first_bad_seq == 4
        assert "content does not match its hash" in first_reason(report)
        assert report.problem_count == 1

    def test_flipping_one_byte_of_the_details_reports_that_seq(self, db):
        record(6)
        details = AuditEvent.objects.get(seq=2).details
        details["note"] = flip_first_byte(details["note"])
        with as_database_owner():
            AuditEvent.objects.filter(seq=2).update(details=details)
        report = audit_verify()
        assert report.first_bad_seq == 2
        assert report.problem_count == 1

    def test_deleting_a_row_reports_the_missing_seq(self, db):
        record(8)
        with as_database_owner():
            AuditEvent.objects.filter(seq=5).delete()
        report = audit_verify()
        assert report.first_bad_seq == 5
        assert first_reason(report).startswith("missing: seq 5 absent")
        assert report.problem_count == 1

    def test_deleting_the_last_row_reports_its_seq(self, db):
        record(8)
        with as_database_owner():
            AuditEvent.objects.filter(seq=8).delete()
        report = audit_verify()
        assert report.first_bad_seq == 8
        assert "tail deleted" in first_reason(report)

    def test_a_chain_head_moved_back_is_detected(self, db):
        record(4)
        AuditChainHead.objects.update(seq=2, hash=AuditEvent.objects.get(seq=2).hash)
        report = audit_verify()
        assert not report.ok
        assert "behind the last event (seq 4)" in first_reason(report)

    def test_swapping_two_rows_reports_the_lower_seq(self, db):
        record(9)
        low, high = AuditEvent.objects.get(seq=3), AuditEvent.objects.get(seq=7)
        with as_database_owner():
            AuditEvent.objects.filter(seq=3).update(**{name: getattr(high, name) for name in CONTENT_FIELDS})
            AuditEvent.objects.filter(seq=7).update(**{name: getattr(low, name) for name in CONTENT_FIELDS})
        report = audit_verify()
        assert report.first_bad_seq == 3
        assert {problem.seq for problem in report.problems} >= {3, 7}

    def test_truncating_the_tail_across_an_exported_checkpoint_is_detected(
        self, db, every_five, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            record(12)
        seventh = AuditEvent.objects.get(seq=7)
        # A careful intruder: the tail, its checkpoint rows and the head, all consistent.
        with as_database_owner():
            AuditEvent.objects.filter(seq__gt=7).delete()
            AuditCheckpoint.objects.filter(seq__gt=7).delete()
            AuditChainHead.objects.update(seq=7, hash=seventh.hash, last_checkpoint_seq=5)
        report = audit_verify()
        assert not report.ok
        assert report.first_bad_seq == 8
        assert "tail truncated" in first_reason(report)
        assert "seq 10" in first_reason(report)

    def test_rewriting_the_tail_across_an_exported_checkpoint_is_detected(
        self, db, every_five, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            record(12)
        seventh = AuditEvent.objects.get(seq=7)
        with as_database_owner():
            AuditEvent.objects.filter(seq__gt=7).delete()
            AuditCheckpoint.objects.filter(seq__gt=7).delete()
            AuditChainHead.objects.update(seq=7, hash=seventh.hash, last_checkpoint_seq=5)
        # ...then appends a different history through the application itself,
        # which even signs a fresh checkpoint at seq 10.
        with django_capture_on_commit_callbacks(execute=True):
            record(5, start=100)
        report = audit_verify()
        assert report.first_bad_seq == 10
        assert "rewritten" in first_reason(report)

    def test_an_altered_checkpoint_row_is_detected(self, db, every_five):
        record(5)
        with as_database_owner():
            AuditCheckpoint.objects.filter(seq=5).update(hash="f" * 64)
        report = audit_verify()
        assert report.first_bad_seq == 5
        assert "signature does not verify" in first_reason(report)

    def test_a_replaced_exported_public_key_is_detected(
        self, db, every_five, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            record(5)
        path = every_five.AUDIT_EXPORT_DIR / "public-keys.json"
        body = json.loads(path.read_text())
        pem = (
            Ed25519PrivateKey.generate()
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
        body["keys"] = {key_id: pem.decode() for key_id in body["keys"]}
        path.write_text(json.dumps(body))
        report = audit_verify()
        assert not report.ok
        assert "exported public key" in first_reason(report)

    def test_a_checkpoint_signed_by_an_unknown_key_is_detected(self, db, every_five):
        record(5)
        AuditCheckpoint.objects.filter(seq=5).update(key_id="0123456789abcdef")
        report = audit_verify()
        assert report.first_bad_seq == 5
        assert "unknown key" in first_reason(report)


class TestCheckpoints:
    def test_one_is_signed_every_n_events(self, db, every_five):
        record(12)
        assert list(AuditCheckpoint.objects.values_list("seq", flat=True)) == [5, 10]
        head = AuditChainHead.objects.get()
        assert head.last_checkpoint_seq == 10
        assert AuditCheckpoint.objects.get(seq=10).hash == AuditEvent.objects.get(seq=10).hash

    def test_one_is_signed_when_the_last_is_older_than_the_interval(self, db, settings):
        record(2)
        assert not AuditCheckpoint.objects.exists()
        AuditChainHead.objects.update(last_checkpoint_at=timezone.now() - timedelta(seconds=301))
        record(1, start=3)
        assert list(AuditCheckpoint.objects.values_list("seq", flat=True)) == [3]

    def test_the_export_verifies_with_only_the_public_key_and_plain_cryptography(
        self, db, every_five, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            record(10)
        export_dir = every_five.AUDIT_EXPORT_DIR
        keys = json.loads((export_dir / "public-keys.json").read_text())["keys"]
        lines = export_lines(export_dir)
        assert [line["seq"] for line in lines] == [5, 10]
        for line in lines:
            public = serialization.load_pem_public_key(keys[line["key_id"]].encode())
            assert isinstance(public, Ed25519PublicKey)
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            assert hashlib.sha256(raw).hexdigest()[:16] == line["key_id"]
            message = json.dumps(
                {
                    "purpose": "sealroom.audit.checkpoint.v1",
                    "seq": line["seq"],
                    "hash": line["hash"],
                    "key_id": line["key_id"],
                    "signed_at": line["signed_at"],
                },
                sort_keys=True,
                separators=(",", ":"),
            ).encode()
            public.verify(base64.b64decode(line["signature"]), message)  # raises if invalid
            assert line["hash"] == AuditEvent.objects.get(seq=line["seq"]).hash

    def test_are_exported_only_after_commit(self, db, every_five, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            with pytest.raises(RuntimeError), transaction.atomic():
                record(5)
                raise RuntimeError("rolled back")
            record(4)
        assert not (every_five.AUDIT_EXPORT_DIR / "checkpoints.jsonl").exists()
        assert not AuditCheckpoint.objects.exists()

    def test_are_marked_exported(self, db, every_five, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            record(5)
        assert AuditCheckpoint.objects.get(seq=5).exported_at is not None

    def test_exporting_again_never_duplicates_a_seq(self, db, every_five, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            record(10)
        assert checkpoint_export() == []
        assert checkpoint_export() == []
        assert [line["seq"] for line in export_lines(every_five.AUDIT_EXPORT_DIR)] == [5, 10]

    def test_a_torn_last_line_is_ended_before_the_next_checkpoint(
        self, db, every_five, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            record(5)
        path = every_five.AUDIT_EXPORT_DIR / "checkpoints.jsonl"
        with path.open("ab") as export:
            export.write(b'{"seq": 10, "ha')  # a write cut short by a crash
        with django_capture_on_commit_callbacks(execute=True):
            record(5, start=6)
        exported = export_read(path)
        assert [checkpoint.seq for checkpoint in exported.checkpoints] == [5, 10]
        assert exported.malformed_lines == [2]
        report = audit_verify()
        assert report.ok, report.summary_lines()
        assert report.warnings == ["export line 2 is unreadable and was skipped"]


class TestCheckpointTick:
    def test_signs_a_checkpoint_when_events_arrived_since_the_last_one(
        self, db, django_capture_on_commit_callbacks, settings
    ):
        record(3)
        with django_capture_on_commit_callbacks(execute=True):
            checkpoint = checkpoint_tick()
        assert checkpoint is not None
        assert (checkpoint.seq, checkpoint.hash) == (3, AuditEvent.objects.get(seq=3).hash)
        assert [line["seq"] for line in export_lines(settings.AUDIT_EXPORT_DIR)] == [3]
        assert AuditChainHead.objects.get().last_checkpoint_seq == 3

    def test_signs_nothing_when_no_event_arrived(self, db, django_capture_on_commit_callbacks):
        assert checkpoint_tick() is None
        record(3)
        with django_capture_on_commit_callbacks(execute=True):
            checkpoint_tick()
            assert checkpoint_tick() is None
        assert AuditCheckpoint.objects.count() == 1

    def test_exports_a_checkpoint_whose_export_never_ran(
        self, db, every_five, django_capture_on_commit_callbacks
    ):
        record(5)  # the after-commit export is lost: callbacks never run
        assert AuditCheckpoint.objects.get(seq=5).exported_at is None
        assert audit_verify().warnings == ["checkpoint at seq 5 not exported yet"]
        with django_capture_on_commit_callbacks(execute=True):
            assert checkpoint_tick() is None
        assert [line["seq"] for line in export_lines(every_five.AUDIT_EXPORT_DIR)] == [5]
        assert AuditCheckpoint.objects.get(seq=5).exported_at is not None

    def test_re_exports_a_lost_export_file(self, db, every_five, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            record(10)
        (every_five.AUDIT_EXPORT_DIR / "checkpoints.jsonl").unlink()
        report = audit_verify()
        assert not report.ok
        assert "missing from the export" in first_reason(report)
        with django_capture_on_commit_callbacks(execute=True):
            checkpoint_tick()
        assert [line["seq"] for line in export_lines(every_five.AUDIT_EXPORT_DIR)] == [5, 10]
        assert audit_verify().ok


class TestAuditVerifyCommand:
    def test_reports_an_intact_chain_and_exits_zero(self, db, every_five, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            record(7)
        out = StringIO()
        call_command("audit_verify", stdout=out)
        output = out.getvalue()
        assert "events checked: 7 (last seq 7; chain head at seq 7)" in output
        assert "checkpoints checked: 1 in the database, 1 in the export" in output
        assert output.rstrip().endswith("chain intact")

    def test_reports_the_first_bad_seq_and_exits_one(self, db):
        record(5)
        with as_database_owner():
            AuditEvent.objects.filter(seq=3).delete()
        out = StringIO()
        with pytest.raises(CommandError) as failed:
            call_command("audit_verify", stdout=out)
        assert failed.value.returncode == 1
        assert "FIRST BAD SEQ: 3 (missing: seq 3 absent before seq 4 (deleted))" in out.getvalue()

    def test_audit_checkpoint_signs_and_exports(self, db, settings):
        record(2)
        out = StringIO()
        call_command("audit_checkpoint", stdout=out)
        assert "signed checkpoint at seq 2" in out.getvalue()
        assert "1 checkpoint(s); database: 1" in out.getvalue()


class TestAuditApi:
    def test_serves_the_public_keys_to_anyone(self, db, api, every_five):
        record(5)
        response = api.get("/api/v1/audit/keys")
        assert response.status_code == 200
        [key] = response.json()["keys"]
        assert key["key_id"] == AuditCheckpoint.objects.get().key_id
        assert key["public_key_pem"].startswith("-----BEGIN PUBLIC KEY-----")

    def test_serves_the_latest_checkpoint_which_verifies_with_the_served_key(self, db, api, every_five):
        assert api.get("/api/v1/audit/checkpoints/latest").json()["checkpoint"] is None
        record(10)
        body = api.get("/api/v1/audit/checkpoints/latest").json()
        checkpoint = body["checkpoint"]
        assert checkpoint["seq"] == 10
        pem = api.get("/api/v1/audit/keys").json()["keys"][0]["public_key_pem"]
        public = serialization.load_pem_public_key(pem.encode())
        assert isinstance(public, Ed25519PublicKey)
        fields = ("seq", "hash", "key_id", "signed_at")
        message = {"purpose": body["purpose"], **{name: checkpoint[name] for name in fields}}
        public.verify(
            base64.b64decode(checkpoint["signature"]),
            json.dumps(message, sort_keys=True, separators=(",", ":")).encode(),
        )


@pytest.mark.postgres
class TestAppendOnlyTrigger:
    def test_refuses_update(self, db):
        record(2)
        with pytest.raises(DatabaseError, match="append-only: UPDATE"), transaction.atomic():
            AuditEvent.objects.filter(seq=1).update(action="test.rewritten")
        assert AuditEvent.objects.get(seq=1).action == "test.event"

    def test_refuses_delete(self, db):
        record(2)
        with pytest.raises(DatabaseError, match="append-only: DELETE"), transaction.atomic():
            AuditEvent.objects.filter(seq=2).delete()
        assert AuditEvent.objects.count() == 2

    def test_refuses_truncate(self, db):
        record(1)
        with (
            pytest.raises(DatabaseError, match="append-only: TRUNCATE"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute("TRUNCATE common_auditevent")
        assert AuditEvent.objects.count() == 1
