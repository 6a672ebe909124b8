"""Positive controls for the offline checkers of chaos/checks.py: each sees what it is there to see.

Every bad state is built directly in the database (the way a bug, or an
intruder with database access, would leave it); each test first shows the
checker silent on the sound state, so a checker that always complains fails
too. The kill drills (tests/*/test_worker_*.py) rely on these checkers for
their verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from chaos.checks import (
    check_audit_chain,
    check_jobs_terminal,
    check_ledger,
    check_no_plaintext_left,
    check_settlement,
    check_takedown,
    check_uploads,
    check_usage_once,
)
from chaos.history import Event
from common.audit import audit_integrate, audit_record
from common.models import AuditEvent, WorkItem, WorkState
from custody import services as custody
from custody.models import DatasetVersion, UsageKind
from custody.services import version_takedown
from marketplace.ledger import escrow_account, ledger_post, payable_account, platform_account
from marketplace.models import AccountKind, License, LicenseState, Order
from marketplace.services.orders import order_place
from marketplace.services.settlement import usage_settle
from tests.conftest import is_postgres
from tests.custody.conftest import drain, sealed_version, upload  # noqa: F401
from tests.grants import grant_for_test
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from tests.marketplace.orders.conftest import cora, fund, market, use  # noqa: F401
from tests.training.conftest import license_terms, submit, tiny  # noqa: F401
from training.launcher import work_root
from training.models import JobState, TrainingJob
from training.services.jobs import job_finish


def ok(op: str, seq: int = 1, **fields: object) -> Event:
    """An acknowledgement as a drill's history holds it."""
    return Event(seq=seq, t=float(seq), kind="ok", fields={"op": op, **fields})


def as_database_owner(sql: str, params: list[str | int]) -> None:
    """Run ``sql`` past the append-only triggers (Postgres: as the owner, replica role)."""
    with connection.cursor() as cursor:
        if is_postgres():
            cursor.execute("SET session_replication_role = replica")
        try:
            cursor.execute(sql, params)
        finally:
            if is_postgres():
                cursor.execute("SET session_replication_role = DEFAULT")


# --- uploads --------------------------------------------------------------------------------------


class TestCheckUploads:
    def test_sees_an_acknowledged_record_that_is_missing(self, sealed_version):  # noqa: F811
        assert check_uploads([ok("upload", version=sealed_version.pk, records=30)]) == []
        problems = check_uploads([ok("upload", version=sealed_version.pk, records=31)])
        assert (
            f"version {sealed_version.pk}: 30 distinct records are stored, 31 were acknowledged" in problems
        )
        assert f"version {sealed_version.pk} counts 30 records, 31 were acknowledged" in problems

    def test_sees_an_acknowledged_version_that_is_gone_or_unfinished(self, version):
        assert version.state == "uploading"
        problems = check_uploads(
            [ok("upload", version=version.pk, records=1), ok("upload", version=999_999, records=1)]
        )
        assert problems == [
            f"version {version.pk} was acknowledged and is uploading",
            "version 999999 was acknowledged and is gone",
        ]


# --- training jobs ------------------------------------------------------------------------------


@pytest.fixture
def job(sealed_rows, bolt, license_terms, submit) -> TrainingJob:  # noqa: F811
    """A queued job on a sealed version (rows only: no worker needed to submit it)."""
    version: DatasetVersion = sealed_rows()
    return submit(grant_for_test(version, bolt, **license_terms))


def succeed(job: TrainingJob, tokens: int) -> TrainingJob:
    """Give the job the usage and end state of a successful run (what the launcher records)."""
    TrainingJob.objects.filter(pk=job.pk).update(training_started_at=timezone.now(), tokens_trained=tokens)
    custody.usage_record(
        grant=job.grant, consumer_ref=job.consumer_ref, kind=UsageKind.JOB_STARTED, quantity=1
    )
    custody.usage_record(
        grant=job.grant, consumer_ref=job.consumer_ref, kind=UsageKind.TOKENS_TRAINED, quantity=tokens
    )
    return job_finish(job_id=job.pk, state=JobState.SUCCEEDED)


class TestCheckJobs:
    def test_sees_a_job_that_never_ended(self, job):
        history = [ok("job_submit", job=job.pk)]
        assert check_jobs_terminal(history) == [f"job {job.pk} is still queued after 0 attempt(s)"]
        job_finish(job_id=job.pk, state=JobState.CANCELLED)
        assert check_jobs_terminal(history) == []

    def test_sees_an_acknowledged_job_that_is_gone(self, db):
        assert check_jobs_terminal([ok("job_submit", job=999_999)]) == [
            "job 999999 was acknowledged and is gone"
        ]


class TestCheckUsageOnce:
    def test_sees_a_start_counted_twice_under_an_attempt_reference(self, job):
        done = succeed(job, tokens=120)
        history = [ok("job_submit", job=job.pk)]
        assert check_usage_once(history) == []
        # What a retry would record if it named its usage by attempt: custody's unique key misses it.
        custody.usage_record(
            grant=job.grant, consumer_ref=f"{job.consumer_ref}-a2", kind=UsageKind.JOB_STARTED, quantity=1
        )
        assert check_usage_once(history) == [
            f"job {done.pk}: usage job_started counted 2 times ({job.consumer_ref}, {job.consumer_ref}-a2)"
        ]

    def test_sees_tokens_counted_twice_in_one_record(self, job):
        succeed(job, tokens=120)
        TrainingJob.objects.filter(pk=job.pk).update(tokens_trained=60)  # the usage says 120: twice 60
        assert check_usage_once([ok("job_submit", job=job.pk)]) == [
            f"job {job.pk} trained 60 tokens and counts 120"
        ]

    def test_does_not_mistake_another_job_for_this_one(self, job):
        succeed(job, tokens=120)
        # training-job-7 and training-job-70 share a prefix: job 70's usage is not job 7's.
        custody.usage_record(
            grant=job.grant, consumer_ref=f"{job.consumer_ref}0", kind=UsageKind.JOB_STARTED, quantity=1
        )
        assert check_usage_once([ok("job_submit", job=job.pk)]) == []


class TestCheckNoPlaintextLeft:
    def test_sees_a_working_directory_an_ended_job_left(self, job, settings, tmp_path: Path):
        settings.TRAINING_WORK_DIR = tmp_path / "work"
        history = [ok("job_submit", job=job.pk)]
        left = work_root() / f"job-{job.pk}-a1-0badf00d"
        left.mkdir()
        assert check_no_plaintext_left(history) == []  # still queued: an attempt may hold its directory
        job_finish(job_id=job.pk, state=JobState.FAILED, reason="worker lost")
        assert check_no_plaintext_left(history) == [f"job {job.pk} is failed and left {left} on disk"]


# --- settlement and the ledger ----------------------------------------------------------------


@pytest.fixture
def settled(market, bolt, bob, fund, settings) -> Callable[[int], tuple[License, int]]:  # noqa: F811
    """``settled(tokens)`` -> a metered license and one usage of it, settled in this process."""
    settings.MARKETPLACE_FEE_BPS = 1000
    offer = market("metered")
    fund(bolt, 1_000)
    license_ = License.objects.get(order=order_place(buyer=bolt, offer=offer, actor=bob))

    def _settle(tokens: int) -> tuple[License, int]:
        usage = use(license_, "job-1", "tokens_trained", tokens)
        usage_settle(usage_id=usage.pk)
        license_.refresh_from_db()
        return license_, usage.pk

    return _settle


class TestCheckLedger:
    def test_sees_a_release_posted_twice(self, settled):
        license_, usage_id = settled(1_000_000)  # 200 released
        assert check_ledger() == []
        order: Order = license_.order
        # The same release again under another key: a retry that did not find the first one.
        ledger_post(
            kind="escrow.release",
            postings=[
                (escrow_account(order_ref=order.ref, currency="EUR"), -200),
                (payable_account(organisation=order.listing.provider, currency="EUR"), 200),
            ],
            idempotency_key=f"settle:usage:{usage_id}:retry",
        )
        problems = check_ledger()
        assert any(
            p.startswith("ledger escrow.release transaction") and f"settle:usage:{usage_id}:retry" in p
            for p in problems
        ), problems
        assert f"license {license_.ref}: escrow holds 600, the license says 800 is left" in problems

    def test_sees_a_payout_without_its_payout(self, settled):
        license_, _usage = settled(1_000_000)
        payable = payable_account(organisation=license_.order.listing.provider, currency="EUR")
        txn = ledger_post(
            kind="payout",
            postings=[(payable, -50), (platform_account(kind=AccountKind.PAYOUTS, currency="EUR"), 50)],
            idempotency_key="payout:pay_twice",
        )
        assert check_ledger() == [
            f"ledger payout transaction {txn.pk} (payout:pay_twice) belongs to no payout: money moved twice"
        ]

    def test_sees_usage_acknowledged_and_never_settled(self, settled):
        license_, usage_id = settled(1_000)
        pending = use(license_, "job-2", "tokens_trained", 1_000)
        history = [
            ok("usage", seq=1, usage=usage_id),
            ok("usage", seq=2, usage=pending.pk),
            ok("usage", usage=9),
        ]
        assert check_settlement(history) == [
            f"usage {pending.pk} was never settled",
            "usage 9 was acknowledged and is gone",
        ]


# --- takedown ------------------------------------------------------------------------------------


class TestCheckTakedown:
    @pytest.fixture
    def taken_down(self, settled, ops, django_capture_on_commit_callbacks) -> tuple[License, list[Event]]:
        license_, _usage = settled(1_000_000)
        with django_capture_on_commit_callbacks(execute=True):
            version_takedown(actor=ops, version=license_.version, reason="court order")
        drain()
        license_.refresh_from_db()
        history = [
            ok("takedown", version=license_.version_id, listings=[], orders=[], licenses=[license_.pk])
        ]
        assert check_takedown(history) == []
        return license_, history

    def test_sees_a_license_left_active(self, taken_down):
        license_, history = taken_down
        License.objects.filter(pk=license_.pk).update(state=LicenseState.ACTIVE)
        assert check_takedown(history) == [
            f"license {license_.ref} on a taken-down version is active, not revoked"
        ]

    def test_sees_a_revocation_recorded_twice_and_work_left_failed(self, taken_down):
        license_, history = taken_down
        audit_record(action="marketplace.license_revoke", object_type="license", object_id=license_.ref)
        WorkItem.objects.filter(kind="marketplace.takedown_license").update(state=WorkState.FAILED)
        problems = check_takedown(history)
        assert f"license {license_.ref} has 2 marketplace.license_revoke audit events, not 1" in problems
        assert any(p.startswith("takedown work item marketplace.takedown_license") for p in problems)


# --- the audit log --------------------------------------------------------------------------------


class TestCheckAuditChain:
    def test_sees_a_broken_link(self, db):
        for n in range(3):
            audit_record(action="test.event", actor_name="drill", object_type="thing", object_id=n)
        audit_integrate()
        assert check_audit_chain() == []
        second = AuditEvent.objects.get(seq=2)
        as_database_owner("UPDATE common_auditevent SET prev_hash = %s WHERE id = %s", ["f" * 64, second.pk])
        problems = check_audit_chain()
        assert "audit log: seq 2: prev_hash does not match the hash of seq 1 (chain broken)" in problems
