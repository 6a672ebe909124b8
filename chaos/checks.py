"""Offline checkers: what a drill's history says was acknowledged, against what the database holds.

Each checker takes the events of a history (:func:`chaos.history.read_history`)
and reads the database through the Django ORM; it returns the violations it
finds as plain sentences, so an empty list means the promise held (DESIGN.md,
"The promises" 2, 4 and 5). Acknowledged operations are ``ok`` events with an
``op`` field:

- ``upload``: ``version`` (id) and ``records`` (how many the upload held);
- ``job_submit``: ``job`` (id);
- ``usage``: ``usage`` (custody usage record id);
- ``takedown``: ``version`` (id), and the ``listings``, ``orders`` (pending)
  and ``licenses`` (active) it had when it was taken down.

The ledger and audit checkers need no history (they check the whole
database) and take it only so that every checker is called alike.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from django.db.models import Sum

from chaos.history import Event
from common.audit_verify import audit_verify
from common.models import AuditEvent, Notification, WorkItem, WorkState
from custody import services as custody
from custody.models import DatasetVersion, GrantPurpose, UsageKind, UsageRecord, VersionState
from marketplace.ledger import ledger_check
from marketplace.models import (
    AccountKind,
    LedgerTransaction,
    License,
    LicenseState,
    Listing,
    ListingState,
    Order,
    OrderState,
    Payout,
    Posting,
    Settlement,
)
from marketplace.services.takedown import TAKEDOWN_KINDS
from training.launcher import workdirs_of
from training.models import JobState, TrainingJob

Check = Callable[[Sequence[Event]], list[str]]

# Versions past ingest: everything acknowledged must be readable in these states.
_INGESTED = (VersionState.REVIEW, VersionState.SEALED)
# Listed in full up to this many ids, so a wholesale loss stays readable.
_SHOW_IDS = 10


def acknowledged(events: Sequence[Event], op: str) -> list[Event]:
    """The ``ok`` events of one operation, in order."""
    return [e for e in events if e.kind == "ok" and e.get("op") == op]


def run_checks(events: Sequence[Event], checks: Sequence[Check]) -> list[str]:
    """Every violation that any of ``checks`` finds, in their order."""
    return [violation for check in checks for violation in check(events)]


def _ids(values: Sequence[int] | set[int]) -> str:
    shown = sorted(values)
    more = f" and {len(shown) - _SHOW_IDS} more" if len(shown) > _SHOW_IDS else ""
    return ", ".join(str(v) for v in shown[:_SHOW_IDS]) + more


# --- uploads ------------------------------------------------------------------------------------


def _version_record_ids(version: DatasetVersion) -> list[int]:
    """Every record id the version yields, read through custody's one audited path."""
    stream = custody.grant_stream_open(
        grant=custody.system_grant(version, GrantPurpose.REVIEW), consumer_ref="chaos-check", purpose="review"
    )
    return [int(record["id"]) for batch in stream for record in batch]


def _records_once(version: DatasetVersion, expected: int) -> list[str]:
    ids = _version_record_ids(version)
    counts = Counter(ids)
    problems = []
    repeated = {i for i, n in counts.items() if n > 1}
    if repeated:
        problems.append(f"version {version.pk}: records {_ids(repeated)} are stored more than once")
    if len(counts) != expected:
        problems.append(
            f"version {version.pk}: {len(counts)} distinct records are stored, {expected} were acknowledged"
        )
    if version.records != expected:
        problems.append(
            f"version {version.pk} counts {version.records} records, {expected} were acknowledged"
        )
    return problems


def check_uploads(events: Sequence[Event]) -> list[str]:
    """Every acknowledged upload finished ingest and holds each of its records exactly once."""
    problems: list[str] = []
    for ack in acknowledged(events, "upload"):
        version = DatasetVersion.objects.filter(pk=ack["version"]).first()
        if version is None:
            problems.append(f"version {ack['version']} was acknowledged and is gone")
        elif version.state not in _INGESTED:
            reason = f": {version.failure_reason}" if version.failure_reason else ""
            problems.append(f"version {version.pk} was acknowledged and is {version.state}{reason}")
        else:
            problems += _records_once(version, int(ack["records"]))
    return problems


# --- training jobs ------------------------------------------------------------------------------


def _acknowledged_jobs(events: Sequence[Event]) -> tuple[list[TrainingJob], list[str]]:
    """The acknowledged jobs that exist, and a violation for each that does not."""
    wanted = [int(ack["job"]) for ack in acknowledged(events, "job_submit")]
    found = TrainingJob.objects.in_bulk(wanted)
    lost = [f"job {pk} was acknowledged and is gone" for pk in wanted if pk not in found]
    return [found[pk] for pk in wanted if pk in found], lost


def check_jobs_terminal(events: Sequence[Event]) -> list[str]:
    """Every acknowledged job exists and has ended (succeeded, failed or cancelled)."""
    jobs, problems = _acknowledged_jobs(events)
    problems += [
        f"job {job.pk} is still {job.state} after {job.attempts} attempt(s)"
        for job in jobs
        if not job.is_final
    ]
    return problems


def _job_usage(job: TrainingJob) -> list[UsageRecord]:
    # An attempt-scoped reference (training-job-7-a2) would slip past custody's unique
    # constraint and count a retried job again: look for those too.
    pattern = rf"^{re.escape(job.consumer_ref)}([^0-9]|$)"
    return list(UsageRecord.objects.filter(grant_id=job.grant_id, consumer_ref__regex=pattern).order_by("pk"))


def _usage_problems(job: TrainingJob, usage: list[UsageRecord]) -> list[str]:
    counts = Counter(u.kind for u in usage)
    refs = {kind: ", ".join(u.consumer_ref for u in usage if u.kind == kind) for kind in counts}
    problems = [
        f"job {job.pk}: usage {kind} counted {n} times ({refs[kind]})"
        for kind, n in sorted(counts.items())
        if n > 1
    ]
    quantity = {u.kind: u.quantity for u in usage}
    if job.training_started_at is None and usage:
        problems.append(f"job {job.pk} never trained yet counts usage {', '.join(sorted(counts))}")
    if quantity.get(UsageKind.JOB_STARTED, 1) != 1:
        problems.append(f"job {job.pk}: job_started counts {quantity[UsageKind.JOB_STARTED]}, not 1")
    if job.state == JobState.SUCCEEDED:
        if UsageKind.JOB_STARTED not in quantity:
            problems.append(f"job {job.pk} succeeded and its start was never counted")
        tokens = quantity.get(UsageKind.TOKENS_TRAINED)
        if tokens != job.tokens_trained:
            problems.append(f"job {job.pk} trained {job.tokens_trained} tokens and counts {tokens}")
    return problems


def check_usage_once(events: Sequence[Event]) -> list[str]:
    """Each acknowledged job counts its start once and its trained tokens once (and only if it trained)."""
    jobs, _lost = _acknowledged_jobs(events)  # check_jobs_terminal reports the lost ones
    return [problem for job in jobs for problem in _usage_problems(job, _job_usage(job))]


def check_no_plaintext_left(events: Sequence[Event]) -> list[str]:
    """No acknowledged job that ended left a working directory (decrypted records) on disk.

    A running attempt's directory holds plaintext by design; once the job has
    ended, the next attempt or the sweeper must have removed every one of them.
    """
    jobs, _lost = _acknowledged_jobs(events)
    return [
        f"job {job.pk} is {job.state} and left {path} on disk"
        for job in jobs
        if job.is_final
        for path in workdirs_of(job.pk)
    ]


# --- settlement and money -----------------------------------------------------------------------


def check_settlement(events: Sequence[Event]) -> list[str]:
    """Every acknowledged usage record exists and is settled by exactly one settlement."""
    wanted = [int(ack["usage"]) for ack in acknowledged(events, "usage")]
    found = UsageRecord.objects.in_bulk(wanted)
    settled = Counter(Settlement.objects.filter(usage_id__in=wanted).values_list("usage_id", flat=True))
    problems = []
    for pk in wanted:
        usage = found.get(pk)
        if usage is None:
            problems.append(f"usage {pk} was acknowledged and is gone")
        elif usage.settled_at is None or settled[pk] == 0:
            problems.append(f"usage {pk} was never settled")
        elif settled[pk] > 1:
            problems.append(f"usage {pk} was settled {settled[pk]} times")
    return problems


def _orphan_transactions() -> list[str]:
    """Releases and payouts in the ledger that no settlement or payout owns: money moved twice."""
    releases = LedgerTransaction.objects.filter(kind="escrow.release", settlement__isnull=True)
    payouts = LedgerTransaction.objects.filter(kind="payout", payout__isnull=True)
    return [
        f"ledger {txn.kind} transaction {txn.pk} ({txn.idempotency_key}) belongs to no "
        f"{'settlement' if txn.kind == 'escrow.release' else 'payout'}: money moved twice"
        for txn in [*releases.order_by("pk"), *payouts.order_by("pk")]
    ]


def _license_problems(license_: License) -> list[str]:
    problems = []
    paid = Settlement.objects.filter(license=license_, reversed_at__isnull=True).aggregate(
        total=Sum("amount")
    )
    settled = int(paid["total"] or 0)
    if settled != license_.released:
        problems.append(
            f"license {license_.ref} says {license_.released} released; its settlements pay {settled}"
        )
    held = Posting.objects.filter(
        account__kind=AccountKind.ESCROW, account__ref=license_.order.ref
    ).aggregate(total=Sum("amount"))
    if int(held["total"] or 0) != license_.escrow_left:
        problems.append(
            f"license {license_.ref}: escrow holds {int(held['total'] or 0)}, "
            f"the license says {license_.escrow_left} is left"
        )
    return problems


def _payout_problems() -> list[str]:
    problems = []
    for payout in Payout.objects.select_related("transaction").order_by("pk"):
        moved = payout.transaction.postings.filter(amount__gt=0).aggregate(total=Sum("amount"))["total"]
        if int(moved or 0) != payout.amount:
            problems.append(f"payout {payout.ref} is for {payout.amount} and its transaction moves {moved}")
    return problems


def check_ledger(events: Sequence[Event] = ()) -> list[str]:
    """The ledger balances, nothing is released or paid out twice, and licenses agree with escrow."""
    problems = [f"ledger: {problem}" for problem in ledger_check()]
    problems += _orphan_transactions()
    for license_ in License.objects.select_related("order").order_by("pk"):
        problems += _license_problems(license_)
    return problems + _payout_problems()


# --- takedown ----------------------------------------------------------------------------------


def _audited(action: str, object_id: object) -> int:
    return AuditEvent.objects.filter(action=action, object_id=str(object_id)).count()


def _once(what: str, action: str, object_id: object) -> list[str]:
    n = _audited(action, object_id)
    return [] if n == 1 else [f"{what} has {n} {action} audit events, not 1"]


def _license_takedown_problems(license_: License) -> list[str]:
    what = f"license {license_.ref}"
    if license_.state != LicenseState.REVOKED:
        return [f"{what} on a taken-down version is {license_.state}, not revoked"]
    problems = _once(what, "marketplace.license_revoke", license_.ref)
    if license_.escrow_left != 0:
        problems.append(f"{what} was revoked with {license_.escrow_left} still in escrow")
    refunds = LedgerTransaction.objects.filter(
        kind="escrow.refund", idempotency_key__startswith=f"license:{license_.ref}:refund:"
    ).count()
    if refunds != (1 if license_.refunded else 0):
        problems.append(f"{what} refunded {license_.refunded} in {refunds} ledger refunds")
    told = Notification.objects.filter(
        organisation_id=license_.licensee_id, kind="license.revoked", object_id=license_.ref
    ).count()
    if told != 1:
        problems.append(f"{what}: the licensee was told {told} times, not once")
    return problems


def _takedown_problems(ack: Event) -> list[str]:
    version = DatasetVersion.objects.filter(pk=ack["version"]).first()
    if version is None or version.state != VersionState.TAKEN_DOWN:
        return [f"version {ack['version']} was acknowledged taken down and is not"]
    problems = []
    for listing in Listing.objects.filter(pk__in=ack.get("listings", [])).order_by("pk"):
        if listing.state != ListingState.WITHDRAWN:
            problems.append(f"listing {listing.pk} of taken-down version {version.pk} is {listing.state}")
        else:
            problems += _once(f"listing {listing.pk}", "marketplace.listing_withdraw", listing.pk)
    for order in Order.objects.filter(pk__in=ack.get("orders", [])).order_by("pk"):
        if order.state == OrderState.PENDING:
            problems.append(f"order {order.ref} on taken-down version {version.pk} is still pending")
    for license_ in License.objects.filter(pk__in=ack.get("licenses", [])).order_by("pk"):
        problems += _license_takedown_problems(license_)
    return problems


def check_takedown(events: Sequence[Event]) -> list[str]:
    """Every acknowledged takedown withdrew, rejected, refunded and told once, and left no work behind."""
    problems = [p for ack in acknowledged(events, "takedown") for p in _takedown_problems(ack)]
    unfinished = WorkItem.objects.filter(kind__in=TAKEDOWN_KINDS).exclude(state=WorkState.DONE)
    problems += [f"takedown work item {item} did not finish" for item in unfinished.order_by("pk")]
    return problems


# --- the audit log ------------------------------------------------------------------------------


def check_audit_chain(events: Sequence[Event] = (), *, export_file: Path | None = None) -> list[str]:
    """The audit log verifies: every hash, every link, every signed checkpoint."""
    report = audit_verify(export_file=export_file)
    problems = [f"audit log: {problem}" for problem in report.problems]
    if report.problem_count > len(report.problems):
        problems.append(f"audit log: {report.problem_count - len(report.problems)} more problems")
    return problems
