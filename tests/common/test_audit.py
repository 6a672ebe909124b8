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
import threading
import time
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

from common.audit import (
    audit_integrate,
    audit_integrate_soon,
    audit_pending,
    audit_record,
    audit_sequencer_resume,
    audit_sequencer_stop,
    audit_sequencer_sweep,
)
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


def record(count: int, *, start: int = 1, integrate: bool = True) -> None:
    """Append ``count`` events; each is integrated at once, as a writer's commit does, unless told not to.

    Inside a test's transaction no commit happens, so the sequencer thread is
    never poked: the test runs the sequencer, one event at a time (waiting for
    the thread where a committing test poked it).
    """
    for n in range(start, start + count):
        audit_record(
            action="test.event",
            actor_name="alice",
            object_type="dataset",
            object_id=n,
            details={"n": n, "ip": "10.0.0.7", "note": "ok"},
        )
        if integrate:
            audit_integrate(wait=True)


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

        # Whatever the sequencer thread, poked by each commit, has not reached yet.
        audit_integrate(wait=True)
        assert list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)) == list(range(1, 81))
        report = audit_verify()
        assert report.ok, report.summary_lines()
        assert report.pending_count == 0
        # A checkpoint at the end of each batch that brought 5 events or more since the last.
        exported = sorted(line["seq"] for line in export_lines(every_five.AUDIT_EXPORT_DIR))
        assert exported and all(b - a >= 5 for a, b in zip([0, *exported], exported, strict=False))


class TestSequencer:
    def test_an_append_is_pending_until_integrated(self, db):
        audit_record(action="test.pending", object_type="thing", object_id=1)
        event = AuditEvent.objects.get(action="test.pending")
        assert (event.seq, event.prev_hash, event.hash) == (None, "", "")
        assert not AuditChainHead.objects.exists()
        result = audit_integrate()
        assert (result.integrated, result.batches, result.busy, result.head_seq) == (1, 1, False, 1)
        event.refresh_from_db()
        assert (event.seq, event.prev_hash) == (1, "0" * 64)
        assert AuditChainHead.objects.get().hash == event.hash
        assert audit_integrate().integrated == 0

    def test_integrates_in_batches_in_id_order_gap_free(self, db):
        record(25, integrate=False)
        result = audit_integrate(batch_size=10)
        assert (result.integrated, result.batches, result.head_seq) == (25, 3, 25)
        by_id = list(AuditEvent.objects.order_by("id").values_list("seq", "object_id"))
        assert by_id == [(n, str(n)) for n in range(1, 26)]
        report = audit_verify()
        assert report.ok, report.summary_lines()
        assert (report.events_checked, report.head_seq, report.pending_count) == (25, 25, 0)

    def test_max_batches_leaves_the_rest_pending(self, db):
        record(7, integrate=False)
        assert audit_integrate(batch_size=3, max_batches=2).integrated == 6
        assert audit_pending().count == 1
        assert audit_integrate().integrated == 1

    def test_a_checkpoint_is_signed_at_the_end_of_a_batch_that_made_it_due(self, db, every_five):
        record(12, integrate=False)
        audit_integrate(batch_size=4)
        # Batches end at 4, 8 and 12: due (5 or more since the last) at 8, then not again until 13.
        assert list(AuditCheckpoint.objects.values_list("seq", flat=True)) == [8]
        assert AuditCheckpoint.objects.get(seq=8).hash == AuditEvent.objects.get(seq=8).hash
        assert audit_verify().ok

    def test_pending_events_are_reported_never_verified(self, db):
        record(3)
        record(2, start=4, integrate=False)
        with as_database_owner():  # appended 90 s ago
            AuditEvent.objects.filter(seq__isnull=True).update(at=timezone.now() - timedelta(seconds=90))
        report = audit_verify()
        assert report.ok, report.summary_lines()
        assert (report.events_checked, report.last_seq, report.pending_count) == (3, 3, 2)
        assert report.pending_oldest_age_seconds is not None and report.pending_oldest_age_seconds >= 90
        assert any(
            line.startswith("pending, not yet integrated: 2 events, the oldest 9")
            for line in report.summary_lines()
        )
        assert report.summary_lines()[-1] == "chain intact"

    def test_the_checkpoint_tick_integrates_first(self, db):
        record(3, integrate=False)
        checkpoint = checkpoint_tick()
        assert checkpoint is not None and checkpoint.seq == 3
        assert audit_pending().count == 0

    def test_the_task_integrates_on_demand(self, db):
        from common.tasks import audit_integrate_tick

        record(4, integrate=False)
        assert audit_integrate_tick() == 4
        assert audit_integrate_tick() == 0

    def test_workers_sweep_what_no_commit_poked_within_the_merge_delay(self, committed, settings):
        from common import audit
        from common.tasks import _audit_sequencer_sweeps

        def unpoked(start: int, count: int) -> None:  # committed, but no writer's commit poked the thread
            AuditEvent.objects.bulk_create(
                AuditEvent(action="test.unpoked", object_id=str(n)) for n in range(start, start + count)
            )

        unpoked(0, 3)
        settings.AUDIT_MERGE_DELAY_MS = 50
        try:
            _audit_sequencer_sweeps()  # what Celery's worker_ready signal runs
            assert audit._sequencer.sweep_seconds == 0.05
            assert integrated_soon(3)
            unpoked(3, 2)
            assert integrated_soon(5)  # the sweep, nothing else, got these
        finally:
            audit_sequencer_sweep(0)
        assert audit._sequencer.sweep_seconds is None
        assert audit_verify().ok

    def test_the_command_integrates_and_says_what_is_left(self, db):
        record(5, integrate=False)
        out = StringIO()
        call_command("audit_integrate", "--batch-size", "2", stdout=out)
        assert "integrated 5 event(s) in 3 batch(es); chain head at seq 5" in out.getvalue()
        assert "pending: 0" in out.getvalue()
        with pytest.raises(CommandError, match="at least 1"):
            call_command("audit_integrate", "--batch-size", "0")

    def test_a_writers_commit_integrates_its_events_once_per_transaction(self, committed):
        with transaction.atomic():
            for n in range(3):
                audit_record(action="test.commit", object_id=n)
            # One poke of the sequencer thread for the transaction, however many events.
            runs = [
                entry for entry in connection.run_on_commit if entry[1].__name__ == "audit_integrate_soon"
            ]
            assert len(runs) == 1
            assert audit_pending().count == 3
        # The commit poked the sequencer thread, which integrates without being asked again.
        assert integrated_soon(3)
        assert list(AuditEvent.objects.order_by("id").values_list("seq", flat=True)) == [1, 2, 3]
        audit_record(action="test.autocommit")  # outside a transaction: poked at once
        assert integrated_soon(4)
        assert audit_verify().ok

    def test_a_rolled_back_action_leaves_no_pending_event(self, committed):
        with pytest.raises(RuntimeError), transaction.atomic():
            audit_record(action="test.doomed")
            raise RuntimeError("the audited action failed")
        assert not AuditEvent.objects.exists()
        assert audit_pending().count == 0


def sequencer_thread_alive() -> bool:
    return any(thread.name == "audit-sequencer" and thread.is_alive() for thread in threading.enumerate())


class TestSequencerThreadStops:
    def test_a_paused_sequencer_starts_on_no_commit_until_resumed(self, committed):
        audit_sequencer_stop(pause=True)
        try:
            audit_record(action="test.paused")  # autocommit: committed, and it pokes
            time.sleep(0.3)
            assert not sequencer_thread_alive()
            assert audit_pending().count == 1
        finally:
            audit_sequencer_resume()
        audit_record(action="test.resumed")
        assert integrated_soon(2)
        assert audit_verify().ok

    def test_stopping_ends_the_thread_after_its_round(self, committed):
        audit_record(action="test.stop")
        assert sequencer_thread_alive()
        audit_sequencer_stop()
        assert not sequencer_thread_alive()
        left = audit_pending().count
        time.sleep(0.2)
        assert audit_pending().count == left  # nothing runs any more
        audit_record(action="test.after")  # the next commit starts a new one
        assert integrated_soon(2)

    def test_no_thread_runs_in_a_test_that_never_commits(self, db):
        # The suite's conftest pauses it here: a round would commit outside this test's transaction.
        audit_integrate_soon()
        assert not sequencer_thread_alive()


class TestPendingTamper:
    """What an intruder with database access can do to events before and after integration."""

    def test_an_event_edited_after_integration_is_detected(self, db):
        record(3, integrate=False)
        audit_integrate()
        with as_database_owner():
            AuditEvent.objects.filter(seq=2).update(object_id="forged")
        report = audit_verify()
        assert report.first_bad_seq == 2
        assert "content does not match its hash" in first_reason(report)

    def test_an_event_deleted_after_integration_leaves_a_gap(self, db):
        record(3, integrate=False)
        audit_integrate()
        with as_database_owner():
            AuditEvent.objects.filter(seq=2).delete()
        assert report_first(audit_verify()) == (2, "missing: seq 2 absent before seq 3 (deleted)")

    def test_an_event_sent_back_to_pending_is_a_gap_not_a_second_chance(self, db):
        record(3)
        # Hide seq 2 by turning it back into a pending event, to be re-sequenced later...
        with as_database_owner():
            AuditEvent.objects.filter(seq=2).update(seq=None, prev_hash="", hash="")
        report = audit_verify()
        assert report_first(report) == (2, "missing: seq 2 absent before seq 3 (deleted)")
        assert report.pending_count == 1
        # ...and integrating it again puts it at the end, where the gap stays.
        audit_integrate()
        report = audit_verify()
        assert report.first_bad_seq == 2
        assert report.last_seq == 4 and report.pending_count == 0

    def test_an_edit_before_integration_is_what_gets_chained(self, db):
        """The honest limit (docs/audit.md): before integration only the trigger (Postgres) protects a row."""
        record(1, integrate=False)
        with as_database_owner():
            AuditEvent.objects.update(object_id="edited-while-pending")
        audit_integrate()
        assert audit_verify().ok
        assert AuditEvent.objects.get(seq=1).object_id == "edited-while-pending"
        with as_database_owner():
            AuditEvent.objects.filter(seq=1).update(object_id="1")
        assert audit_verify().first_bad_seq == 1


def integrated_soon(count: int, timeout: float = 30) -> bool:
    """Whether ``count`` events get integrated, by someone else, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if AuditEvent.objects.filter(seq__isnull=False).count() >= count:
            return True
        time.sleep(0.02)
    return False


def report_first(report: VerifyReport) -> tuple[int | None, str]:
    return report.first_bad_seq, first_reason(report)


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

    def test_allows_only_the_sequencer_to_fill_in_a_pending_event(self, db):
        record(2, integrate=False)
        pending = AuditEvent.objects.order_by("id").first()
        assert pending is not None
        with pytest.raises(DatabaseError, match="append-only: UPDATE"), transaction.atomic():
            AuditEvent.objects.filter(pk=pending.pk).update(action="test.rewritten")
        with pytest.raises(DatabaseError, match="append-only: DELETE"), transaction.atomic():
            AuditEvent.objects.filter(pk=pending.pk).delete()
        # Sequencing with the content changed at the same time is refused too.
        with pytest.raises(DatabaseError, match="append-only: UPDATE"), transaction.atomic():
            AuditEvent.objects.filter(pk=pending.pk).update(
                seq=1, prev_hash="0" * 64, hash="a" * 64, object_id="x"
            )
        assert audit_integrate().integrated == 2
        with pytest.raises(DatabaseError, match="append-only: UPDATE"), transaction.atomic():
            AuditEvent.objects.filter(seq=1).update(seq=None, prev_hash="", hash="")
        assert audit_verify().ok

    def test_a_second_sequencer_skips_while_one_holds_the_head(self, committed):
        record(1)
        held, release = threading.Event(), threading.Event()

        def sequencer_holding_the_head() -> None:
            try:
                with transaction.atomic():
                    AuditChainHead.objects.select_for_update().get(pk=1)
                    held.set()
                    release.wait(30)
            finally:
                connection.close()

        with ThreadPoolExecutor(max_workers=1) as pool:
            holder = pool.submit(sequencer_holding_the_head)
            assert held.wait(30)
            try:
                # Writers never wait for the head; their after-commit sequencer skips it.
                record(2, start=2, integrate=False)
                result = audit_integrate(wait=False)
            finally:
                release.set()
            holder.result()
        assert (result.busy, result.integrated) == (True, 0)
        audit_integrate(wait=True)  # or the sequencer thread, poked by the commits, got there first
        assert list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True)) == [1, 2, 3]

    def test_concurrent_writers_are_integrated_gap_free(self, committed, every_five):
        def write(writer: int) -> None:
            try:
                for n in range(25):
                    with transaction.atomic():
                        audit_record(action="test.concurrent", object_id=f"{writer}-{n}")
            finally:
                connection.close()

        with ThreadPoolExecutor(max_workers=8) as pool:
            for result in [pool.submit(write, writer) for writer in range(8)]:
                result.result()
        audit_integrate(wait=True)  # whatever the sequencer thread has not reached yet
        seqs = list(AuditEvent.objects.order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, 201))
        assert AuditEvent.objects.values("object_id").distinct().count() == 200
        report = audit_verify()
        assert report.ok, report.summary_lines()

    def test_refuses_truncate(self, db):
        record(1)
        with (
            pytest.raises(DatabaseError, match="append-only: TRUNCATE"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute("TRUNCATE common_auditevent")
        assert AuditEvent.objects.count() == 1
