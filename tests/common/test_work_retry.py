"""Re-driving failed work: ``work_retry`` and ``manage.py work_retry``, against the real database."""

from __future__ import annotations

import threading
from io import StringIO
from typing import Any
from uuid import uuid4

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from common.exceptions import Conflict, Invalid, NotFound, NotPermitted
from common.models import AuditEvent, WorkItem, WorkState
from common.work import work_claim, work_complete, work_enqueue, work_fail, work_handler, work_retry, work_run

runs: list[str] = []


@work_handler("test.retry.flaky")
def _flaky(item: WorkItem) -> None:
    runs.append(item.ref)
    if item.ref.startswith("broken"):
        raise RuntimeError("still broken")


@pytest.fixture(autouse=True)
def _forget_runs() -> Any:
    runs.clear()
    yield
    runs.clear()


def failed_item(ref: str | None = None, kind: str = "test.retry.flaky", max_attempts: int = 2) -> WorkItem:
    """An item that used up its attempts, as a worker leaves it."""
    item = work_enqueue(kind=kind, ref=ref or f"broken-{uuid4().hex}", max_attempts=max_attempts)
    for _ in range(max_attempts):
        assert work_claim(item_id=item.pk, owner="w1") is not None
        work_fail(item_id=item.pk, owner="w1", error="RuntimeError at handler.py:3", retryable=True)
    item.refresh_from_db()
    assert item.state == WorkState.FAILED
    return item


@pytest.mark.django_db
class TestWorkRetry:
    def test_queues_a_failed_item_with_fresh_attempts_audited_and_rings_after_commit(
        self, ops, django_capture_on_commit_callbacks
    ):
        item = failed_item()
        with django_capture_on_commit_callbacks() as callbacks:
            retried = work_retry(item_id=item.pk, actor=ops, reason="handler fixed in 1.4.2")
        # One ring for the worker, one poke for the audit sequencer.
        assert sorted(c.__name__ for c in callbacks) == ["audit_integrate_soon", "send"]
        assert (retried.state, retried.attempts, retried.max_attempts) == (WorkState.QUEUED, 0, 2)
        assert (retried.finished_at, retried.lease_expires_at, retried.lease_owner) == (None, None, "")
        # The last error stays on the row until the next attempt says otherwise.
        assert retried.last_error == "RuntimeError at handler.py:3"
        event = AuditEvent.objects.get(action="common.work_retry")
        assert (event.actor_name, event.object_type, event.object_id) == ("ops", "work_item", str(item.pk))
        assert event.details["reason"] == "handler fixed in 1.4.2"
        assert (event.details["attempts"], event.details["kind"]) == (2, "test.retry.flaky")
        assert event.details["last_error"] == "RuntimeError at handler.py:3"
        assert item.finished_at is not None
        assert event.details["failed_at"] == item.finished_at.isoformat()

    def test_the_retried_item_runs_again_to_completion(self, ops):
        item = failed_item(ref=f"fixed-{uuid4().hex}")
        assert work_run(item_id=item.pk, owner="w2") == "skipped"  # failed: nobody runs it
        work_retry(item_id=item.pk, actor=ops, reason="fixed")
        assert work_run(item_id=item.pk, owner="w2") == "done"
        item.refresh_from_db()
        assert (item.state, item.attempts, item.last_error) == (WorkState.DONE, 1, "")
        assert runs == [item.ref]

    def test_an_item_failing_again_gets_its_own_allowance_and_fails_again(self, ops):
        item = failed_item(max_attempts=2)
        work_retry(item_id=item.pk, actor=ops, reason="try once more")
        assert [work_run(item_id=item.pk, owner="w") for _ in range(3)] == ["retrying", "failed", "skipped"]
        item.refresh_from_db()
        assert (item.state, item.attempts) == (WorkState.FAILED, 2)

    @pytest.mark.parametrize("state", [WorkState.QUEUED, WorkState.RUNNING, WorkState.DONE])
    def test_refuses_an_item_that_is_not_failed(self, ops, state, django_capture_on_commit_callbacks):
        item = work_enqueue(kind="test.retry.flaky", ref=uuid4().hex)
        if state != WorkState.QUEUED:
            work_claim(item_id=item.pk, owner="w1")
        if state == WorkState.DONE:
            work_complete(item_id=item.pk, owner="w1")
        with django_capture_on_commit_callbacks() as callbacks, pytest.raises(Conflict) as refused:
            work_retry(item_id=item.pk, actor=ops, reason="why not")
        assert refused.value.code == "common.work_not_failed"
        assert f"is {state}" in refused.value.detail
        assert WorkItem.objects.get(pk=item.pk).state == state
        assert callbacks == []
        assert not AuditEvent.objects.filter(action="common.work_retry").exists()

    def test_refuses_a_missing_item_no_reason_and_non_operators(self, ops, audrey, alice):
        item = failed_item()
        with pytest.raises(NotFound):
            work_retry(item_id=item.pk + 1000, actor=ops, reason="x")
        with pytest.raises(Invalid) as no_reason:
            work_retry(item_id=item.pk, actor=ops, reason="   ")
        assert no_reason.value.errors[0]["pointer"] == "/reason"
        for user in (audrey, alice):
            with pytest.raises(NotPermitted):
                work_retry(item_id=item.pk, actor=user, reason="x")
        assert WorkItem.objects.get(pk=item.pk).state == WorkState.FAILED
        assert not AuditEvent.objects.filter(action="common.work_retry").exists()

    def test_a_second_retry_is_refused_once_the_first_queued_it(self, ops):
        item = failed_item()
        work_retry(item_id=item.pk, actor=ops, reason="first")
        with pytest.raises(Conflict):
            work_retry(item_id=item.pk, actor=ops, reason="second")
        assert AuditEvent.objects.filter(action="common.work_retry").count() == 1

    def test_enqueueing_a_failed_item_again_changes_nothing_and_says_so(self, caplog):
        item = failed_item()
        again = work_enqueue(kind=item.kind, ref=item.ref)
        assert (again.pk, again.state) == (item.pk, WorkState.FAILED)
        assert "re-drive it with work_retry" in caplog.text


@pytest.mark.postgres
class TestConcurrentRetry:
    def test_two_operators_retrying_at_once_re_drive_it_once(self, transactional_db, ops):
        item = failed_item()
        barrier = threading.Barrier(2)
        results: list[Any] = [None, None]

        def retry(index: int) -> None:
            barrier.wait()
            try:
                results[index] = work_retry(item_id=item.pk, actor=ops, reason=f"operator {index}").state
            except Exception as exc:  # noqa: BLE001 - reported as the thread's result
                results[index] = exc
            finally:
                connection.close()

        threads = [threading.Thread(target=retry, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(type(r).__name__ for r in results) == ["Conflict", "str"], results
        assert AuditEvent.objects.filter(action="common.work_retry").count() == 1
        item.refresh_from_db()
        assert (item.state, item.attempts) == (WorkState.QUEUED, 0)


@pytest.mark.django_db
class TestWorkRetryCommand:
    def run(self, *args: str) -> tuple[str, str]:
        out, err = StringIO(), StringIO()
        call_command("work_retry", *args, stdout=out, stderr=err)
        return out.getvalue(), err.getvalue()

    def test_retries_items_by_id_audited_as_the_command_line(self):
        first, second = failed_item(), failed_item()
        out, _ = self.run(str(first.pk), str(second.pk), "--reason", "gateway back")
        assert f"work item {first.pk} (test.retry.flaky {first.ref}) queued again on default" in out
        assert "2 retried, 0 refused" in out
        assert set(WorkItem.objects.filter(pk__in=[first.pk, second.pk]).values_list("state", flat=True)) == {
            WorkState.QUEUED
        }
        names = set(
            AuditEvent.objects.filter(action="common.work_retry").values_list("actor_name", flat=True)
        )
        assert len(names) == 1 and names.pop().startswith("command line (")

    def test_retries_every_failed_item_of_a_kind_only(self):
        mine = [failed_item(), failed_item()]
        other = failed_item(kind="test.retry.other")
        work_enqueue(kind="test.retry.flaky", ref="waiting")
        out, _ = self.run("--kind", "test.retry.flaky", "--failed", "--reason", "bug fixed")
        assert "2 retried, 0 refused" in out
        assert all(WorkItem.objects.get(pk=i.pk).state == WorkState.QUEUED for i in mine)
        assert WorkItem.objects.get(pk=other.pk).state == WorkState.FAILED
        assert "waiting" not in out
        assert self.run("--kind", "test.retry.flaky", "--failed", "--reason", "again")[0] == (
            "no failed test.retry.flaky items\n"
        )

    def test_names_unknown_and_unfailed_items_and_exits_1(self):
        failed, queued = failed_item(), work_enqueue(kind="test.retry.flaky", ref="waiting")
        err = StringIO()
        with pytest.raises(CommandError, match="1 retried, 2 refused") as refused:
            call_command(
                "work_retry",
                str(queued.pk),
                "999999",
                str(failed.pk),
                "--reason",
                "r",
                stdout=StringIO(),
                stderr=err,
            )
        assert refused.value.returncode == 1
        assert f"work item {queued.pk}: Work item {queued.pk} is queued, not failed" in err.getvalue()
        assert "work item 999999: No work item 999999. (common.work_item_not_found)" in err.getvalue()
        assert WorkItem.objects.get(pk=failed.pk).state == WorkState.QUEUED

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ((), "Give item ids, or --kind KIND --failed."),
            (("--kind", "test.retry.flaky"), "Give item ids, or --kind KIND --failed."),
            (("1", "--kind", "k", "--failed"), "not both"),
            (("1", "--reason", " "), "Give a reason"),
            (("9" * 25,), "not a work item id"),
            (("²",), "not a work item id"),
        ],
    )
    def test_bad_input_is_a_plain_error(self, args, message):
        failed_item()
        with pytest.raises(CommandError, match=message):
            call_command(
                "work_retry", *args, *(() if "--reason" in args else ("--reason", "r")), stdout=StringIO()
            )
