"""Leased units of background work: enqueue, claim, heartbeat, complete, fail, sweep.

The database holds the state of every :class:`~common.models.WorkItem`; the
Celery message is only a doorbell that names the item. A worker claims an item
by taking its lease with one conditional UPDATE, renews the lease from a
heartbeat thread while the handler runs, and completes or fails it. The
sweeper (Celery beat) re-enqueues items whose lease expired (the worker died)
and queued items whose doorbell is overdue (the message was lost), and fails
items that ran out of attempts. So a task may be delivered twice, late or
never, and each item still runs to completion: handlers must be idempotent,
because a worker can die after a handler's side effects and before
:func:`work_complete`.

A failed item stays failed: nothing runs it again by itself, and enqueueing
its ``(kind, ref)`` again returns it unchanged (with a warning in the log).
An operator re-drives it with :func:`work_retry` (the console's Work page, or
``manage.py work_retry``), which is audited.

Apps plug in by registering a handler for a kind::

    @work_handler("custody.ingest_chunk")
    def ingest_chunk(item: WorkItem) -> None: ...

and enqueue with ``work_enqueue(kind="custody.ingest_chunk", ref=..., queue="custody")``.
Register handlers in the app's ``tasks`` module (or a module it imports):
Celery's autodiscovery imports it in every worker, which is where they run.
"""

from __future__ import annotations

import getpass
import logging
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from django.conf import settings
from django.db import connections, transaction
from django.db.models import F, Q
from django.utils import timezone

from common.audit import audit_reason, audit_record
from common.exceptions import Conflict, NotFound, NotPermitted
from common.models import User, WorkItem, WorkState

logger = logging.getLogger(__name__)

WorkHandler = Callable[[WorkItem], None]
RunOutcome = Literal["done", "retrying", "failed", "skipped"]

_HANDLERS: dict[str, WorkHandler] = {}

# A failure message is kept for people, not machines: cap what a handler's
# exception can put in the row.
_ERROR_LIMIT = 2000
_SWEEP_BATCH = 500


class WorkError(Exception):
    """A handler failure whose message is recorded and logged: it must hold no custody data.

    Any other exception's message is withheld (only its type and where it was
    raised are kept), because messages of arbitrary exceptions (a parser's
    offending line, a database's duplicate key) can quote custody records.
    """

    retryable = True


class PermanentWorkError(WorkError):
    """Raised by a handler when retrying cannot help: the item fails at once."""

    retryable = False


@dataclass
class SweepReport:
    """What one sweep did, by item id."""

    requeued_expired: list[int] = field(default_factory=list)
    requeued_lost: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[int]]:
        return {
            "requeued_expired": self.requeued_expired,
            "requeued_lost": self.requeued_lost,
            "failed": self.failed,
        }


# --- Handlers -------------------------------------------------------------------


def _name(handler: WorkHandler) -> tuple[str, str]:
    return handler.__module__, handler.__qualname__


def work_handler(kind: str) -> Callable[[WorkHandler], WorkHandler]:
    """Register the decorated function as the handler for ``kind``.

    :raises ValueError: another function already handles ``kind``.
    """

    def register(handler: WorkHandler) -> WorkHandler:
        existing = _HANDLERS.get(kind)
        # Re-importing the same module is fine; two handlers for one kind is a bug.
        if existing is not None and _name(existing) != _name(handler):
            raise ValueError(f"work kind {kind!r} already has a handler: {existing.__qualname__}")
        _HANDLERS[kind] = handler
        return handler

    return register


def work_handler_for(kind: str) -> WorkHandler | None:
    """The registered handler for ``kind``, or None."""
    return _HANDLERS.get(kind)


# --- Enqueue and the doorbell -------------------------------------------------------


def _ring(item_id: int, queue: str, countdown: float = 0) -> None:
    """Send the doorbell after the current transaction commits.

    ``robust``: a broker outage must not fail the request that accepted the
    work; the item is in the database and the sweeper rings again later.
    """
    # Imported here: common.tasks imports this module.
    from common.tasks import run_work

    def send() -> None:
        run_work.apply_async(kwargs={"item_id": item_id}, queue=queue, countdown=countdown)

    transaction.on_commit(send, robust=True)


def work_enqueue(*, kind: str, ref: str, queue: str = "default", max_attempts: int | None = None) -> WorkItem:
    """Record a unit of work (once per ``(kind, ref)``) and ring its doorbell after commit.

    Enqueueing the same ``(kind, ref)`` again returns the existing item,
    whatever its state, and sends nothing.

    :raises ValueError: ``queue`` is not one of the Celery queues.
    """
    if queue not in settings.CELERY_TASK_QUEUES_NAMES:
        raise ValueError(f"unknown queue {queue!r}; one of {', '.join(settings.CELERY_TASK_QUEUES_NAMES)}")
    with transaction.atomic():
        item, created = WorkItem.objects.get_or_create(
            kind=kind,
            ref=ref,
            defaults={"queue": queue, "max_attempts": max_attempts or settings.WORK_MAX_ATTEMPTS},
        )
        if created:
            _ring(item.pk, item.queue)
    if item.state == WorkState.FAILED:
        # Whoever enqueues again (a sweep, say) still wants this done: say that only an operator can.
        logger.warning(
            "work item %s (%s %s) failed and is not run again; re-drive it with work_retry",
            item.pk,
            kind,
            ref,
        )
    return item


# --- The lease ---------------------------------------------------------------------------


def _lease_until(now: datetime) -> datetime:
    return now + timedelta(seconds=settings.WORK_LEASE_SECONDS)


def work_claim(*, item_id: int, owner: str) -> WorkItem | None:
    """Take the item's lease for ``owner`` and count an attempt.

    Succeeds when the item is queued, or running under an expired lease, and
    has attempts left. Returns None when it is done, failed, out of attempts,
    missing, or leased by a live owner. One conditional UPDATE, so two
    workers racing for an item cannot both win.
    """
    now = timezone.now()
    claimable = Q(state=WorkState.QUEUED) | Q(state=WorkState.RUNNING, lease_expires_at__lt=now)
    taken = WorkItem.objects.filter(claimable, pk=item_id, attempts__lt=F("max_attempts")).update(
        state=WorkState.RUNNING,
        lease_owner=owner,
        lease_expires_at=_lease_until(now),
        attempts=F("attempts") + 1,
    )
    if not taken:
        return None
    return WorkItem.objects.get(pk=item_id)


def _held(item_id: int, owner: str) -> Q:
    return Q(pk=item_id, state=WorkState.RUNNING, lease_owner=owner)


def work_heartbeat(*, item_id: int, owner: str) -> bool:
    """Extend ``owner``'s lease; False when the lease is no longer theirs."""
    renewed = WorkItem.objects.filter(_held(item_id, owner)).update(
        lease_expires_at=_lease_until(timezone.now())
    )
    return renewed == 1


def work_complete(*, item_id: int, owner: str) -> bool:
    """Mark the item done; False when ``owner`` no longer held its lease (nothing changes)."""
    done = WorkItem.objects.filter(_held(item_id, owner)).update(
        state=WorkState.DONE, lease_expires_at=None, finished_at=timezone.now(), last_error=""
    )
    return done == 1


def _retry_delay(attempts: int) -> float:
    # Exponential backoff, capped: 2, 4, 8 ... 60 seconds.
    return float(min(2**attempts, 60))


@transaction.atomic
def work_fail(*, item_id: int, owner: str, error: str, retryable: bool) -> WorkState | None:
    """Record a failed attempt: queue the item again (with backoff) or mark it failed.

    It is queued again when ``retryable`` and attempts are left. Returns the
    new state, or None when ``owner`` no longer held the lease (nothing changes).
    """
    item = WorkItem.objects.select_for_update().filter(_held(item_id, owner)).first()
    if item is None:
        return None
    item.last_error = error[:_ERROR_LIMIT]
    item.lease_expires_at = None
    if retryable and item.attempts < item.max_attempts:
        item.state = WorkState.QUEUED
        item.enqueued_at = timezone.now()
        _ring(item.pk, item.queue, countdown=_retry_delay(item.attempts))
    else:
        item.state = WorkState.FAILED
        item.finished_at = timezone.now()
    item.save(update_fields=["state", "last_error", "lease_expires_at", "enqueued_at", "finished_at"])
    return WorkState(item.state)


def _command_line_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        return "unknown"


def work_retry(*, item_id: int, actor: User | None, reason: str) -> WorkItem:
    """Put a failed item back in the queue with a fresh set of attempts, audited, and ring after commit.

    ``actor`` is an operator, or None for the command line (audited under its
    operating-system user). The item's ``attempts`` start again from 0 against
    its own ``max_attempts`` (a training job keeps its smaller allowance, and a
    handler's "last attempt" test still means what it says); what the failed
    run used up (attempts, ``finished_at``, ``last_error``) goes into the
    audit event ``common.work_retry``, and ``last_error`` also stays on the row
    until the next attempt replaces or clears it. One conditional UPDATE from
    ``failed``, so of two operators retrying at once one re-drives the item
    and the other gets :class:`Conflict`.

    This is the way out for work that ran out of attempts: a settlement
    (``marketplace.settle_usage``) whose item failed is never run again (the
    marketplace sweep skips usage that already has an item, so failed ones
    cannot starve newer usage); once retried, the next worker settles it,
    exactly once (the handler is idempotent). Retrying an item whose object
    already reached a final state elsewhere (a training job that failed, say)
    runs a handler that finds nothing left to do.

    :raises NotPermitted: ``actor`` is not an operator.
    :raises Invalid: no reason.
    :raises NotFound: no such item.
    :raises Conflict: the item is not failed (queued, running or done), or another retry won.
    """
    if actor is not None and not actor.is_operator:
        raise NotPermitted("Only platform operators retry work.", code="common.operator_only")
    reason = audit_reason(reason, code="common.reason_required")
    with transaction.atomic():
        item = WorkItem.objects.filter(pk=item_id).first()
        if item is None:
            raise NotFound(f"No work item {item_id}.", code="common.work_item_not_found")
        if item.state != WorkState.FAILED:
            raise Conflict(
                f"Work item {item_id} is {item.state}, not failed: only failed work can be retried.",
                code="common.work_not_failed",
            )
        retried = WorkItem.objects.filter(pk=item_id, state=WorkState.FAILED).update(
            state=WorkState.QUEUED,
            attempts=0,
            lease_owner="",
            lease_expires_at=None,
            finished_at=None,
            enqueued_at=timezone.now(),
        )
        if not retried:
            raise Conflict(f"Work item {item_id} was retried a moment ago.", code="common.work_not_failed")
        who: dict[str, Any] = (
            {"actor": actor}
            if actor is not None
            else {"actor_name": f"command line ({_command_line_user()})"}
        )
        audit_record(
            action="common.work_retry",
            object_type="work_item",
            object_id=item.pk,
            details={
                "kind": item.kind,
                "ref": item.ref,
                "reason": reason,
                "attempts": item.attempts,
                "max_attempts": item.max_attempts,
                "failed_at": item.finished_at.isoformat() if item.finished_at else None,
                # Safe to record: handlers' messages are filtered by describe_failure.
                "last_error": item.last_error,
            },
            **who,
        )
        _ring(item.pk, item.queue)
    item.refresh_from_db()
    return item


# --- Running an item -----------------------------------------------------------------------


@contextmanager
def _heartbeat(item_id: int, owner: str) -> Iterator[None]:
    """Renew the lease from a thread while the body runs.

    The thread has its own database connection, closed when it stops, so a
    handler that holds no connection open still keeps its lease.
    """
    stop = threading.Event()
    interval = max(settings.WORK_LEASE_SECONDS / 3, 0.5)

    def beat() -> None:
        try:
            while not stop.wait(interval):
                if not work_heartbeat(item_id=item_id, owner=owner):
                    logger.warning("work item %s: lease lost by %s", item_id, owner)
                    return
        except Exception:
            # A heartbeat that cannot reach the database lets the lease lapse;
            # the sweeper then hands the item to someone else. Say so.
            logger.exception("work item %s: heartbeat failed", item_id)
        finally:
            connections.close_all()

    thread = threading.Thread(target=beat, name=f"work-heartbeat-{item_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval + 5)


def describe_failure(exc: BaseException) -> str:
    """What may be recorded about a handler's exception: its message only for a :class:`WorkError`."""
    name = type(exc).__name__
    if isinstance(exc, WorkError):
        return f"{name}: {exc}"
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    return f"{name}{where} (message withheld: it may quote custody data)"


def work_run(*, item_id: int, owner: str) -> RunOutcome:
    """Claim the item, run its handler under a heartbeat, and complete or fail it.

    Safe to call any number of times for the same item: a call that cannot
    claim it (done, failed, or leased by a live worker) does nothing and
    returns ``"skipped"``. A handler raising :class:`PermanentWorkError`
    fails the item; any other exception retries it while attempts are left.
    Handler output never reaches the log or the row beyond
    :func:`describe_failure`.
    """
    item = work_claim(item_id=item_id, owner=owner)
    if item is None:
        return "skipped"
    handler = work_handler_for(item.kind)
    if handler is None:
        # Retryable: during a rolling deploy an older worker may not know a new
        # kind yet; a newer worker takes the next attempt.
        state = work_fail(
            item_id=item_id, owner=owner, error=f"no handler for kind {item.kind!r}", retryable=True
        )
        return "retrying" if state == WorkState.QUEUED else "failed"
    try:
        with _heartbeat(item_id, owner):
            handler(item)
    except Exception as exc:  # noqa: BLE001 - any handler failure is recorded on the item
        error = describe_failure(exc)
        logger.warning(
            "work item %s (%s) attempt %s failed: %s\n%s",
            item_id,
            item.kind,
            item.attempts,
            error,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        retryable = not isinstance(exc, WorkError) or exc.retryable
        state = work_fail(item_id=item_id, owner=owner, error=error, retryable=retryable)
        return "retrying" if state == WorkState.QUEUED else "failed"
    if not work_complete(item_id=item_id, owner=owner):
        logger.warning("work item %s finished after its lease passed to another worker", item_id)
        return "skipped"
    return "done"


# --- The sweeper -----------------------------------------------------------------------------


def _requeue(item: WorkItem, matches: Q, now: datetime) -> bool:
    """Queue ``item`` again if it still ``matches`` (a worker may have claimed it meanwhile)."""
    with transaction.atomic():
        changed = WorkItem.objects.filter(matches, pk=item.pk).update(
            state=WorkState.QUEUED, lease_expires_at=None, enqueued_at=now
        )
        if changed:
            _ring(item.pk, item.queue)
    return changed == 1


def _fail_exhausted(item: WorkItem, matches: Q, now: datetime) -> bool:
    changed = WorkItem.objects.filter(matches, pk=item.pk).update(
        state=WorkState.FAILED,
        lease_expires_at=None,
        finished_at=now,
        last_error=item.last_error or f"gave up after {item.attempts} attempts (lease expired)",
    )
    return changed == 1


def work_sweep(now: datetime | None = None) -> SweepReport:
    """Recover work that a dead worker or a lost message left behind.

    Running items whose lease expired go back to the queue; queued items
    whose doorbell is older than ``WORK_REQUEUE_AFTER_SECONDS`` get a new one;
    either kind, when out of attempts, is marked failed. Each change is a
    conditional UPDATE, so sweeping concurrently with workers is safe.
    """
    now = now or timezone.now()
    report = SweepReport()
    expired = Q(state=WorkState.RUNNING, lease_expires_at__lt=now)
    lost = Q(
        state=WorkState.QUEUED, enqueued_at__lt=now - timedelta(seconds=settings.WORK_REQUEUE_AFTER_SECONDS)
    )
    for matches, requeued in ((expired, report.requeued_expired), (lost, report.requeued_lost)):
        for item in WorkItem.objects.filter(matches).order_by("pk")[:_SWEEP_BATCH]:
            if item.attempts >= item.max_attempts:
                if _fail_exhausted(item, matches, now):
                    report.failed.append(item.pk)
            elif _requeue(item, matches, now):
                requeued.append(item.pk)
    if report.failed or report.requeued_expired or report.requeued_lost:
        logger.info("work sweep: %s", report.as_dict())
    return report
