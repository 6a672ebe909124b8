"""Work items through a real Celery worker process: delivery, crash recovery, duplicates, retries.

Side effects are rows the drill handlers write (tests/worker/handlers.py), so
"exactly once" is counted in the database the worker and the test share.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from uuid import uuid4

import pytest
from django.db import transaction

from common.models import WorkItem, WorkState
from common.processes import wait_until
from common.tasks import run_work
from common.work import work_enqueue, work_sweep
from tests.worker.handlers import effect_count, gate_path
from tests.worker.harness import TEST_LEASE_SECONDS, WorkerProcess

pytestmark = pytest.mark.worker


def enqueue_committed(kind: str, *, queue: str = "default", max_attempts: int | None = None) -> WorkItem:
    with transaction.atomic():
        return work_enqueue(kind=kind, ref=uuid4().hex, queue=queue, max_attempts=max_attempts)


def wait_for_state(item: WorkItem, state: WorkState, timeout: float = 30) -> WorkItem:
    def in_state() -> WorkItem | None:
        return WorkItem.objects.filter(pk=item.pk, state=state).first()

    found = wait_until(in_state, what=f"work item {item.pk} ({item.kind}) to be {state}", timeout=timeout)
    assert found is not None
    return found


def started(ref: str, *, times: int) -> Callable[[], bool]:
    """Whether a drill handler has started ``times`` times for ``ref``."""
    return lambda: effect_count(ref, "started") == times


def succeeded(worker: WorkerProcess, task_id: str) -> Callable[[], bool]:
    """Whether the worker logged the task as finished (whatever it returned)."""
    return lambda: f"[{task_id}] succeeded" in worker.log_text()


def ran_in(worker: WorkerProcess, item: WorkItem) -> bool:
    # Lease owners read host:pid:nonce; the solo pool runs tasks in the worker's own process.
    return item.lease_owner.split(":")[1] == str(worker.pid)


@pytest.mark.parametrize("queue", ["default", "custody", "training"])
def test_an_item_enqueued_in_a_committed_transaction_is_run_by_the_worker(celery_worker_process, queue):
    item = enqueue_committed("test.record", queue=queue)
    done = wait_for_state(item, WorkState.DONE)
    assert done.attempts == 1
    assert ran_in(celery_worker_process, done)
    assert effect_count(item.ref) == 1


@pytest.mark.parametrize(
    "kills",
    [pytest.param(1, id="one-kill"), pytest.param(4, id="four-kills", marks=pytest.mark.proof)],
)
def test_a_worker_killed_mid_run_loses_nothing_and_repeats_nothing(celery_worker_process, kills):
    ref = uuid4().hex
    gate_path(ref).touch()  # the handler blocks while its gate exists
    with transaction.atomic():
        item = work_enqueue(kind="test.block", ref=ref, max_attempts=kills + 1)
    for attempt in range(1, kills + 1):
        wait_until(started(ref, times=attempt), what=f"attempt {attempt} to start")
        assert WorkItem.objects.get(pk=item.pk).state == WorkState.RUNNING
        celery_worker_process.kill()
        if attempt == kills:
            gate_path(ref).unlink()
        celery_worker_process.start()
        # The dead worker's lease lapses; then the sweeper hands the item on.
        wait_until(
            lambda: item.pk in work_sweep().requeued_expired,
            what="the sweeper to re-enqueue the expired lease",
            timeout=TEST_LEASE_SECONDS * 5,
            interval=0.2,
        )
    done = wait_for_state(item, WorkState.DONE)
    assert done.attempts == kills + 1
    assert ran_in(celery_worker_process, done)
    assert effect_count(ref, "started") == kills + 1
    assert effect_count(ref) == 1


def test_a_second_delivery_of_a_done_item_is_a_no_op(celery_worker_process):
    item = enqueue_committed("test.record")
    wait_for_state(item, WorkState.DONE)
    duplicates = [run_work.apply_async(kwargs={"item_id": item.pk}, queue="default") for _ in range(2)]
    for sent in duplicates:
        wait_until(succeeded(celery_worker_process, sent.id), what=f"the worker to take duplicate {sent.id}")
    assert celery_worker_process.log_text().count(": 'skipped'") >= 2
    item.refresh_from_db()
    assert (item.state, item.attempts) == (WorkState.DONE, 1)
    assert effect_count(item.ref) == 1


def test_a_handler_running_longer_than_its_lease_keeps_it_by_heartbeat(celery_worker_process):
    item = enqueue_committed("test.slow")
    wait_until(started(item.ref, times=1), what="the slow handler to start")
    while effect_count(item.ref) == 0:
        assert item.pk not in work_sweep().requeued_expired, "the sweeper took a live lease"
        time.sleep(0.2)
    done = wait_for_state(item, WorkState.DONE)
    assert done.attempts == 1
    assert effect_count(item.ref, "started") == 1


def test_a_failing_handler_is_retried_until_it_succeeds(celery_worker_process):
    item = enqueue_committed("test.flaky")
    done = wait_for_state(item, WorkState.DONE)
    assert done.attempts == 2
    assert done.last_error == ""
    assert effect_count(item.ref) == 1


def test_a_permanent_error_fails_the_item_without_retrying(celery_worker_process):
    item = enqueue_committed("test.doomed")
    failed = wait_for_state(item, WorkState.FAILED)
    assert failed.attempts == 1
    assert "cannot ever work" in failed.last_error
