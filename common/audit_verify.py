"""Verify the audit log: the hash chain, the signed checkpoints and their exported copy.

``audit_verify`` streams the events in seq order (constant memory, any
length), recomputes each hash, checks the links and that no seq is missing,
checks each checkpoint's signature and that it matches the event at its seq,
and reports the first bad sequence number with what is wrong there.

Only integrated events are verified. Events still waiting for the sequencer
(no seq yet) are counted and reported as "pending, not yet integrated", with
the age of the oldest: never as verified, and not as a problem either (see
docs/audit.md "Sequencer" for what protects them until they are integrated).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from django.utils import timezone

from common.audit import GENESIS_HASH, audit_pending, event_hash
from common.audit_checkpoints import (
    ExportedCheckpoint,
    ExportLocation,
    export_exists,
    export_path,
    export_read,
    public_keys_beside,
    public_keys_read,
)
from common.models import AuditChainHead, AuditCheckpoint, AuditEvent
from common.signing import PublicKeyRing, signing_key_provider

# Every problem counts; only the first ones are kept, so a wholesale
# corruption cannot exhaust memory. The lowest seq is tracked separately.
_KEEP_PROBLEMS = 100


@dataclass(frozen=True)
class Problem:
    """One thing wrong; ``seq`` is None when it concerns no single event."""

    seq: int | None
    reason: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.reason}" if self.seq is not None else self.reason


@dataclass
class VerifyReport:
    """What ``audit_verify`` checked and found."""

    export_file: ExportLocation  # the local file, or the s3:// folder when blobs are in S3
    events_checked: int = 0
    last_seq: int = 0
    head_seq: int | None = None
    checkpoints_checked: int = 0
    exported_checkpoints_checked: int = 0
    problem_count: int = 0
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    first_problem: Problem | None = None
    # Committed events the sequencer has not integrated yet: reported, never verified.
    pending_count: int = 0
    pending_oldest_at: datetime | None = None
    pending_oldest_age_seconds: float | None = None

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    @property
    def first_bad_seq(self) -> int | None:
        return self.first_problem.seq if self.first_problem is not None else None

    def add(self, seq: int | None, reason: str) -> None:
        problem = Problem(seq, reason)
        self.problem_count += 1
        if len(self.problems) < _KEEP_PROBLEMS:
            self.problems.append(problem)
        if _sorts_before(problem, self.first_problem):
            self.first_problem = problem

    def summary_lines(self) -> list[str]:
        """A human summary; the last line says "chain intact" or names the first bad seq."""
        head = "none" if self.head_seq is None else f"seq {self.head_seq}"
        lines = [
            f"events checked: {self.events_checked} (last seq {self.last_seq}; chain head at {head})",
            f"checkpoints checked: {self.checkpoints_checked} in the database, "
            f"{self.exported_checkpoints_checked} in the export ({self.export_file})",
        ]
        if self.pending_count:
            lines.append(
                f"pending, not yet integrated: {self.pending_count} events, the oldest "
                f"{self.pending_oldest_age_seconds or 0:.1f} s old "
                "(not verified: they have no seq or hash yet)"
            )
        lines += [f"warning: {warning}" for warning in self.warnings]
        first = self.first_problem
        if first is None:
            return [*lines, "chain intact"]
        lines += [f"problem: {problem}" for problem in self.problems]
        if self.problem_count > len(self.problems):
            lines.append(f"... {self.problem_count - len(self.problems)} more problems not shown")
        if first.seq is None:
            return [*lines, f"AUDIT LOG PROBLEM: {first.reason}"]
        return [*lines, f"FIRST BAD SEQ: {first.seq} ({first.reason})"]


def _sorts_before(problem: Problem, current: Problem | None) -> bool:
    if current is None:
        return True
    if problem.seq is None:
        return False
    return current.seq is None or problem.seq < current.seq


@dataclass
class _Anchor:
    """A signed claim that the event at ``seq`` has hash ``hash``."""

    seq: int
    hash: str
    source: str


def audit_verify(*, chunk_size: int = 2000, export_file: Path | None = None) -> VerifyReport:
    """Check the whole audit log and its exported checkpoints; never raises on a bad log.

    Reads, in this order, the database checkpoints, the export file and the
    chain head, then streams the events: everything read first was committed
    before the event stream opened, so concurrent appends cause no false alarm.
    """
    report = VerifyReport(export_file=export_file or export_path())
    provider_keys = signing_key_provider().public_keys()
    keys = PublicKeyRing(provider_keys)
    _check_exported_keys(report, provider_keys)
    anchors: dict[int, list[_Anchor]] = {}
    db_checkpoints = _check_db_checkpoints(report, keys, anchors)
    export_only = _check_export(report, keys, anchors, db_checkpoints)
    head = AuditChainHead.objects.filter(pk=1).first()
    report.head_seq = head.seq if head is not None else None
    head_event_hash = _walk_chain(report, anchors, chunk_size, head)
    _check_head(report, head, head_event_hash)
    _check_unmatched_anchors(report, anchors)
    _check_export_only(report, export_only)
    pending = audit_pending()
    report.pending_count, report.pending_oldest_at = pending.count, pending.oldest_at
    report.pending_oldest_age_seconds = pending.oldest_age_seconds(timezone.now())
    return report


def _check_exported_keys(report: VerifyReport, provider_keys: dict[str, str]) -> None:
    """The public keys published beside the export must be the key provider's."""
    exported = public_keys_read(public_keys_beside(report.export_file))
    for key_id, pem in sorted(exported.items()):
        if key_id in provider_keys and provider_keys[key_id].strip() != pem.strip():
            report.add(None, f"the exported public key {key_id} differs from the key provider's")
    if export_exists(report.export_file):
        for key_id in sorted(set(provider_keys) - set(exported)):
            report.warnings.append(f"public key {key_id} is not exported yet")


def _add_anchor(anchors: dict[int, list[_Anchor]], anchor: _Anchor) -> None:
    anchors.setdefault(anchor.seq, []).append(anchor)


def _check_db_checkpoints(
    report: VerifyReport, keys: PublicKeyRing, anchors: dict[int, list[_Anchor]]
) -> dict[int, AuditCheckpoint]:
    checkpoints: dict[int, AuditCheckpoint] = {}
    not_exported: list[int] = []
    for checkpoint in AuditCheckpoint.objects.order_by("seq").iterator(chunk_size=2000):
        report.checkpoints_checked += 1
        checkpoints[checkpoint.seq] = checkpoint
        signed = ExportedCheckpoint.from_model(checkpoint)
        if _signature_ok(report, keys, signed, "database checkpoint"):
            _add_anchor(anchors, _Anchor(checkpoint.seq, checkpoint.hash, "database checkpoint"))
        if checkpoint.exported_at is None:
            not_exported.append(checkpoint.seq)
    if len(not_exported) == 1:
        report.warnings.append(f"checkpoint at seq {not_exported[0]} not exported yet")
    elif not_exported:
        report.warnings.append(
            f"{len(not_exported)} checkpoints not exported yet (seq {not_exported[0]} to {not_exported[-1]})"
        )
    return checkpoints


def _signature_ok(report: VerifyReport, keys: PublicKeyRing, signed: ExportedCheckpoint, source: str) -> bool:
    if signed.key_id not in keys:
        report.add(signed.seq, f"{source} signed by unknown key {signed.key_id!r}")
        return False
    if not keys.verifies(signed.key_id, signed.message(), signed.signature):
        report.add(signed.seq, f"{source} signature does not verify (checkpoint altered)")
        return False
    return True


def _check_export(
    report: VerifyReport,
    keys: PublicKeyRing,
    anchors: dict[int, list[_Anchor]],
    db_checkpoints: dict[int, AuditCheckpoint],
) -> list[int]:
    """Check the export file's lines; returns the seqs it holds that the database did not."""
    exported = export_read(report.export_file)
    for number in exported.malformed_lines:
        report.warnings.append(f"export line {number} is unreadable and was skipped")
    seen: dict[int, ExportedCheckpoint] = {}
    export_only: list[int] = []
    for line in exported.checkpoints:
        if seen.get(line.seq) == line:
            report.warnings.append(f"export holds seq {line.seq} more than once")
            continue
        # A different line for a seq already seen is checked like any other:
        # if validly signed, it disagrees with the event at that seq.
        seen.setdefault(line.seq, line)
        report.exported_checkpoints_checked += 1
        if _signature_ok(report, keys, line, "exported checkpoint"):
            _add_anchor(anchors, _Anchor(line.seq, line.hash, "exported checkpoint"))
        checkpoint = db_checkpoints.get(line.seq)
        if checkpoint is None:
            export_only.append(line.seq)
        elif ExportedCheckpoint.from_model(checkpoint) != line:
            report.add(
                line.seq,
                "the database's checkpoint differs from the one exported for this seq "
                "(signed twice: the chain was rewritten up to here)",
            )
    for seq, checkpoint in db_checkpoints.items():
        if checkpoint.exported_at is not None and seq not in seen:
            report.add(
                None,
                f"checkpoint at seq {seq} was exported but is missing from the export "
                "(export lost or rewritten; checkpoint_tick re-exports it)",
            )
    return export_only


def _walk_chain(
    report: VerifyReport,
    anchors: dict[int, list[_Anchor]],
    chunk_size: int,
    head: AuditChainHead | None,
) -> str | None:
    """Stream the events; returns the stored hash of the event at the head's seq, if seen."""
    expected_seq, prev_hash = 1, GENESIS_HASH
    head_event_hash = None
    integrated = AuditEvent.objects.filter(seq__isnull=False).order_by("seq")
    for event in integrated.iterator(chunk_size=chunk_size):
        if event.seq is None:  # filtered out above; for the type checker
            continue
        report.events_checked += 1
        if event.seq > expected_seq:
            gap = (
                f"seq {expected_seq}"
                if event.seq == expected_seq + 1
                else f"seqs {expected_seq}..{event.seq - 1}"
            )
            report.add(expected_seq, f"missing: {gap} absent before seq {event.seq} (deleted)")
        elif event.seq < expected_seq:
            report.add(event.seq, f"out of sequence: seq {event.seq} where {expected_seq} was expected")
        if event_hash(event) != event.hash:
            report.add(event.seq, "content does not match its hash (edited after it was written)")
        if event.seq == expected_seq and event.prev_hash != prev_hash:
            report.add(event.seq, f"prev_hash does not match the hash of seq {event.seq - 1} (chain broken)")
        for anchor in anchors.pop(event.seq, []):
            if anchor.hash != event.hash:
                report.add(
                    event.seq,
                    f"hash differs from the {anchor.source} signed for this seq "
                    "(the chain was rewritten up to here)",
                )
        if head is not None and event.seq == head.seq:
            head_event_hash = event.hash
        # Resynchronise on the stored values, so one bad row is reported once.
        expected_seq, prev_hash = max(expected_seq, event.seq + 1), event.hash
        report.last_seq = event.seq
    return head_event_hash


def _check_head(report: VerifyReport, head: AuditChainHead | None, head_event_hash: str | None) -> None:
    if head is None:
        if report.events_checked:
            report.add(None, "the chain head row is missing")
        return
    if head.seq > report.last_seq:
        report.add(
            report.last_seq + 1,
            f"missing: the log ends at seq {report.last_seq} but the chain head is at seq {head.seq} "
            "(tail deleted)",
        )
    elif head_event_hash is not None and head.hash != head_event_hash:
        report.add(head.seq, "the chain head's hash differs from the event at its seq")
    # The head only moves forward, with the events it covers: read again now,
    # it must have reached every event the walk saw.
    now = AuditChainHead.objects.filter(pk=1).values_list("seq", flat=True).first()
    if now is not None and now < report.last_seq:
        report.add(None, f"the chain head (seq {now}) is behind the last event (seq {report.last_seq})")


def _check_unmatched_anchors(report: VerifyReport, anchors: dict[int, list[_Anchor]]) -> None:
    for seq in sorted(anchors):
        source = anchors[seq][0].source
        if seq > report.last_seq:
            report.add(
                report.last_seq + 1,
                f"tail truncated: the {source} at seq {seq} is beyond the last event (seq {report.last_seq})",
            )
        else:
            report.add(seq, f"missing: the event that the {source} at this seq signs is absent")


def _check_export_only(report: VerifyReport, seqs: list[int]) -> None:
    """Exported checkpoints the database lacked when read: committed since, or deleted."""
    found: set[int] = set()
    for start in range(0, len(seqs), 500):
        batch = seqs[start : start + 500]
        found |= set(AuditCheckpoint.objects.filter(seq__in=batch).values_list("seq", flat=True))
    for seq in seqs:
        if seq not in found:
            report.add(None, f"checkpoint at seq {seq} is in the export but was deleted from the database")
