"""Leased work services, in this process against the real database (the worker drills are in tests/worker)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from uuid import uuid4

import pytest
from django.db import transaction
from django.utils import timezone

from common.audit import audit_record
from common.models import WorkItem, WorkState
from common.tasks import audit_checkpoint_tick, run_work
from common.work import (
    PermanentWorkError,
    work_claim,
    work_complete,
    work_enqueue,
    work_fail,
    work_handler,
    work_heartbeat,
    work_run,
    work_sweep,
)
from config.celery import app as celery_app

handled_refs: list[str] = []


@work_handler("test.unit.ok")
def _ok(item: WorkItem) -> None:
    handled_refs.append(item.ref)


@work_handler("test.unit.broken")
def _broken(item: WorkItem) -> None:
    raise RuntimeError("disk on fire")


SECRET_RECORD = "patient Jane Roe, born 1970-01-01"


@work_handler("test.unit.leaky")
def _leaky(item: WorkItem) -> None:
    # As a parser might: quoting the offending record in its message.
    raise ValueError(f"cannot parse line 3: {SECRET_RECORD!r}")


@work_handler("test.unit.permanent")
def _permanent(item: WorkItem) -> None:
    raise PermanentWorkError("bad input, retrying cannot help")


def enqueue(kind: str = "test.unit.ok", **kwargs) -> WorkItem:
    return work_enqueue(kind=kind, ref=uuid4().hex, **kwargs)


def expire_lease(item: WorkItem) -> None:
    WorkItem.objects.filter(pk=item.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))


@pytest.fixture(autouse=True)
def _forget_runs() -> Iterator[None]:
    handled_refs.clear()
    yield
    handled_refs.clear()


@pytest.mark.django_db
class TestWorkEnqueue:
    def test_records_a_queued_item_and_rings_after_commit(self, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks() as callbacks:
            item = work_enqueue(kind="test.unit.ok", ref="r1", queue="custody")
        assert (item.state, item.queue, item.attempts) == (WorkState.QUEUED, "custody", 0)
        assert item.max_attempts == 5
        assert len(callbacks) == 1

    def test_is_idempotent_per_kind_and_ref(self, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks() as callbacks:
            first = work_enqueue(kind="test.unit.ok", ref="same")
            second = work_enqueue(kind="test.unit.ok", ref="same", queue="training")
        assert first.pk == second.pk
        assert second.queue == "default"
        assert WorkItem.objects.filter(kind="test.unit.ok", ref="same").count() == 1
        assert len(callbacks) == 1  # the second call rings nothing

    def test_the_same_ref_under_another_kind_is_another_item(self):
        assert (
            work_enqueue(kind="test.unit.ok", ref="x").pk != work_enqueue(kind="test.unit.broken", ref="x").pk
        )

    def test_rejects_an_unknown_queue(self):
        with pytest.raises(ValueError, match="unknown queue"):
            work_enqueue(kind="test.unit.ok", ref="r", queue="gpu")
        assert not WorkItem.objects.exists()

    def test_a_rolled_back_enqueue_leaves_no_item_and_rings_nothing(self, django_capture_on_commit_callbacks):
        with (
            django_capture_on_commit_callbacks() as callbacks,
            pytest.raises(ZeroDivisionError),
            transaction.atomic(),
        ):
            work_enqueue(kind="test.unit.ok", ref="doomed")
            _ = 1 / 0
        assert not WorkItem.objects.filter(ref="doomed").exists()
        assert callbacks == []


@contextmanager
def broker_unreachable() -> Iterator[None]:
    """Send this process's doorbells to a port where nothing listens, for the block."""
    saved = celery_app.conf.broker_url, celery_app.conf.broker_transport_options

    def point_at(url: str, options: dict) -> None:
        celery_app.conf.update(broker_url=url, broker_transport_options=options)
        # Drop pooled connections and producers, as Celery itself does after a
        # fork; there is no public call for it.
        celery_app._after_fork()  # type: ignore[attr-defined]

    with pytest.MonkeyPatch.context() as mp:
        # Celery prefers this environment variable to its configuration.
        mp.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:1/0")
        point_at("redis://127.0.0.1:1/0", {"max_retries": 1})
        try:
            yield
        finally:
            mp.undo()
            point_at(*saved)


@pytest.mark.django_db(transaction=True)
def test_a_broker_outage_at_commit_loses_nothing(caplog):
    with broker_unreachable():
        with transaction.atomic():
            item = enqueue()
        assert WorkItem.objects.filter(pk=item.pk).exists()  # committed, though the doorbell failed
        # The commit went through; the doorbell failed and was logged, and the
        # sweeper rings again once the item has waited WORK_REQUEUE_AFTER_SECONDS.
    item.refresh_from_db()
    assert item.state == WorkState.QUEUED
    assert any("on_commit" in record.getMessage() for record in caplog.records)
    later = timezone.now() + timedelta(hours=1)
    assert work_sweep(now=later).requeued_lost == [item.pk]


@pytest.mark.django_db
class TestWorkClaim:
    def test_takes_the_lease_and_counts_an_attempt(self, settings):
        item = enqueue()
        claimed = work_claim(item_id=item.pk, owner="w1")
        assert claimed is not None
        assert (claimed.state, claimed.lease_owner, claimed.attempts) == (WorkState.RUNNING, "w1", 1)
        assert claimed.lease_expires_at is not None
        lease = (claimed.lease_expires_at - timezone.now()).total_seconds()
        assert settings.WORK_LEASE_SECONDS - 5 < lease <= settings.WORK_LEASE_SECONDS

    def test_refuses_an_item_leased_by_a_live_owner(self):
        item = enqueue()
        work_claim(item_id=item.pk, owner="w1")
        assert work_claim(item_id=item.pk, owner="w2") is None
        item.refresh_from_db()
        assert (item.lease_owner, item.attempts) == ("w1", 1)

    def test_takes_over_an_expired_lease(self):
        item = enqueue()
        work_claim(item_id=item.pk, owner="w1")
        expire_lease(item)
        claimed = work_claim(item_id=item.pk, owner="w2")
        assert claimed is not None
        assert (claimed.lease_owner, claimed.attempts) == ("w2", 2)

    def test_refuses_done_failed_missing_and_exhausted_items(self):
        done, failed, exhausted = enqueue(), enqueue(), enqueue(max_attempts=1)
        WorkItem.objects.filter(pk=done.pk).update(state=WorkState.DONE)
        WorkItem.objects.filter(pk=failed.pk).update(state=WorkState.FAILED)
        WorkItem.objects.filter(pk=exhausted.pk).update(attempts=1)
        for item_id in (done.pk, failed.pk, exhausted.pk, 10**9):
            assert work_claim(item_id=item_id, owner="w1") is None


@pytest.mark.django_db
class TestLeaseHolder:
    def test_heartbeat_extends_only_the_owners_lease(self):
        item = enqueue()
        work_claim(item_id=item.pk, owner="w1")
        WorkItem.objects.filter(pk=item.pk).update(lease_expires_at=timezone.now() + timedelta(seconds=1))
        assert work_heartbeat(item_id=item.pk, owner="w2") is False
        assert work_heartbeat(item_id=item.pk, owner="w1") is True
        item.refresh_from_db()
        assert item.lease_expires_at is not None
        assert item.lease_expires_at > timezone.now() + timedelta(seconds=30)

    def test_complete_needs_the_lease(self):
        item = enqueue()
        work_claim(item_id=item.pk, owner="w1")
        assert work_complete(item_id=item.pk, owner="w2") is False
        assert work_complete(item_id=item.pk, owner="w1") is True
        item.refresh_from_db()
        assert item.state == WorkState.DONE
        assert item.finished_at is not None
        assert item.lease_expires_at is None
        assert work_complete(item_id=item.pk, owner="w1") is False

    def test_a_retryable_failure_queues_the_item_again_with_a_doorbell(
        self, django_capture_on_commit_callbacks
    ):
        item = enqueue()
        work_claim(item_id=item.pk, owner="w1")
        with django_capture_on_commit_callbacks() as callbacks:
            state = work_fail(item_id=item.pk, owner="w1", error="boom", retryable=True)
        assert state == WorkState.QUEUED
        assert len(callbacks) == 1
        item.refresh_from_db()
        assert (item.state, item.last_error, item.lease_expires_at) == (WorkState.QUEUED, "boom", None)

    def test_a_permanent_failure_or_the_last_attempt_fails_the_item(self):
        permanent, last = enqueue(), enqueue(max_attempts=1)
        for item, retryable in ((permanent, False), (last, True)):
            work_claim(item_id=item.pk, owner="w1")
            assert work_fail(item_id=item.pk, owner="w1", error="no", retryable=retryable) == WorkState.FAILED
            item.refresh_from_db()
            assert item.finished_at is not None

    def test_fail_without_the_lease_changes_nothing(self):
        item = enqueue()
        work_claim(item_id=item.pk, owner="w1")
        assert work_fail(item_id=item.pk, owner="w2", error="x", retryable=False) is None
        item.refresh_from_db()
        assert item.state == WorkState.RUNNING


@pytest.mark.django_db
class TestWorkRun:
    def test_runs_the_handler_once_and_completes(self):
        item = enqueue()
        assert work_run(item_id=item.pk, owner="w1") == "done"
        assert work_run(item_id=item.pk, owner="w2") == "skipped"
        assert handled_refs == [item.ref]
        item.refresh_from_db()
        assert (item.state, item.attempts) == (WorkState.DONE, 1)

    def test_a_second_delivery_while_running_is_skipped(self):
        item = enqueue()
        work_claim(item_id=item.pk, owner="w1")
        assert work_run(item_id=item.pk, owner="w2") == "skipped"
        assert handled_refs == []

    def test_a_handler_exception_is_recorded_and_retried(self):
        item = enqueue("test.unit.broken", max_attempts=2)
        assert work_run(item_id=item.pk, owner="w1") == "retrying"
        item.refresh_from_db()
        assert item.last_error.startswith("RuntimeError at ")
        assert "test_work.py" in item.last_error
        assert work_run(item_id=item.pk, owner="w1") == "failed"
        item.refresh_from_db()
        assert (item.state, item.attempts) == (WorkState.FAILED, 2)

    def test_a_permanent_error_fails_at_once_with_its_message(self):
        item = enqueue("test.unit.permanent")
        assert work_run(item_id=item.pk, owner="w1") == "failed"
        item.refresh_from_db()
        assert (item.state, item.attempts) == (WorkState.FAILED, 1)
        assert item.last_error == "PermanentWorkError: bad input, retrying cannot help"

    def test_an_arbitrary_exceptions_message_reaches_neither_row_nor_log(self, caplog):
        item = enqueue("test.unit.leaky")
        assert work_run(item_id=item.pk, owner="w1") == "retrying"
        item.refresh_from_db()
        assert "message withheld" in item.last_error
        assert SECRET_RECORD not in item.last_error
        assert "ValueError" in caplog.text
        assert SECRET_RECORD not in caplog.text

    def test_an_unknown_kind_is_retried_then_failed(self):
        item = enqueue("test.unit.nobody-handles-this", max_attempts=1)
        assert work_run(item_id=item.pk, owner="w1") == "failed"
        item.refresh_from_db()
        assert "no handler" in item.last_error

    def test_the_celery_task_is_an_adapter_over_work_run(self):
        item = enqueue()
        assert run_work(item_id=item.pk) == "done"
        item.refresh_from_db()
        assert item.lease_owner.count(":") == 2  # host:pid:nonce, for people reading the row

    def test_registering_a_second_handler_for_a_kind_is_refused(self):
        with pytest.raises(ValueError, match="already has a handler"):

            @work_handler("test.unit.ok")
            def another(item: WorkItem) -> None:
                raise AssertionError("never runs")


@pytest.mark.django_db
class TestWorkSweep:
    def test_requeues_an_expired_lease_with_a_doorbell(self, django_capture_on_commit_callbacks):
        item = enqueue()
        work_claim(item_id=item.pk, owner="dead-worker")
        expire_lease(item)
        with django_capture_on_commit_callbacks() as callbacks:
            report = work_sweep()
        assert report.requeued_expired == [item.pk]
        assert len(callbacks) == 1
        item.refresh_from_db()
        assert (item.state, item.lease_expires_at, item.attempts) == (WorkState.QUEUED, None, 1)

    def test_leaves_live_leases_fresh_doorbells_and_finished_items_alone(self):
        running, queued, done = enqueue(), enqueue(), enqueue()
        work_claim(item_id=running.pk, owner="w1")
        WorkItem.objects.filter(pk=done.pk).update(state=WorkState.DONE)
        report = work_sweep()
        assert report.as_dict() == {"requeued_expired": [], "requeued_lost": [], "failed": []}
        assert WorkItem.objects.get(pk=queued.pk).enqueued_at == queued.enqueued_at

    def test_rings_again_for_a_queued_item_whose_doorbell_is_overdue(self, settings):
        item = enqueue()
        later = timezone.now() + timedelta(seconds=settings.WORK_REQUEUE_AFTER_SECONDS + 1)
        assert work_sweep(now=later).requeued_lost == [item.pk]
        item.refresh_from_db()
        assert item.enqueued_at == later
        assert work_sweep(now=later).requeued_lost == []  # the new doorbell is fresh

    def test_fails_an_expired_item_out_of_attempts(self):
        item = enqueue(max_attempts=1)
        work_claim(item_id=item.pk, owner="dead-worker")
        expire_lease(item)
        assert work_sweep().failed == [item.pk]
        item.refresh_from_db()
        assert item.state == WorkState.FAILED
        assert "lease expired" in item.last_error


@pytest.mark.django_db
def test_the_audit_checkpoint_tick_signs_only_when_events_arrived():
    event = audit_record(action="test.work.tick")
    assert event.seq is None  # pending: the tick integrates it, then signs
    signed_at = audit_checkpoint_tick()
    event.refresh_from_db()
    assert signed_at == event.seq == 1
    assert audit_checkpoint_tick() is None
