"""Celery tasks for common: thin adapters over :mod:`common.work`, the audit sequencer and checkpoints.

Every task takes ids as keyword arguments and is safe to run twice; the
database holds the state, the message is only a doorbell. Apps register their
work handlers (``@work_handler``) in their own ``tasks`` module, which Celery's
autodiscovery imports in every worker.
"""

from __future__ import annotations

import os
import socket
import uuid

from celery import shared_task
from celery.signals import worker_ready

from common import webhooks  # registers the webhook delivery work handler
from common.work import RunOutcome, work_run, work_sweep


def _owner() -> str:
    """A lease owner name that says which process held it (for people reading the row)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@shared_task(name="common.run_work", ignore_result=True)
def run_work(*, item_id: int) -> RunOutcome:
    """Run one work item (claim, handler, complete or fail); a no-op if it cannot be claimed."""
    return work_run(item_id=item_id, owner=_owner())


@shared_task(name="common.sweep_work", ignore_result=True)
def sweep_work() -> dict[str, list[int]]:
    """Re-enqueue expired leases and lost doorbells; fail what ran out of attempts (beat)."""
    return work_sweep().as_dict()


@worker_ready.connect
def _audit_sequencer_sweeps(**_kwargs: object) -> None:
    """Each worker sweeps the audit log's pending events every AUDIT_MERGE_DELAY_MS (maximum merge delay).

    A thread of the worker's main process, not a beat task: a message a
    second would crowd the broker and the worker's log for what is most often
    a no-op (writers' commits integrate their own events within milliseconds).
    """
    from common.audit import audit_sequencer_sweep

    audit_sequencer_sweep()


@shared_task(name="common.audit_integrate", ignore_result=True)
def audit_integrate_tick() -> int:
    """Integrate what is pending in the audit log now (on demand; workers also sweep on their own).

    A no-op when another sequencer holds the head. Returns the events integrated.
    """
    from common.audit import audit_integrate

    return audit_integrate(wait=False).integrated


@shared_task(name="common.audit_checkpoint_tick", ignore_result=True)
def audit_checkpoint_tick() -> int | None:
    """Sign an audit checkpoint if events arrived since the last (beat, every AUDIT_CHECKPOINT_SECONDS).

    Returns the checkpoint's sequence number, or None when nothing was new.
    """
    # Imported lazily so that loading the worker's task registry stays light.
    from common.audit_checkpoints import checkpoint_tick

    checkpoint = checkpoint_tick()
    return checkpoint.seq if checkpoint is not None else None


@shared_task(name="common.webhook_retry_sweep", ignore_result=True)
def webhook_retry_sweep() -> list[int]:
    """Enqueue the next attempt of webhook deliveries whose retry is due (beat)."""
    return webhooks.webhook_retry_sweep()


@shared_task(name="common.blob_uploads_sweep", ignore_result=True)
def blob_uploads_sweep() -> list[str]:
    """Abort the S3 multipart uploads that an outage or a dead worker left unfinished (beat, hourly).

    Returns the blob keys aborted; nothing to do on the local blob store.
    """
    from common.blobs import blob_store

    sweep = getattr(blob_store(), "abandoned_uploads_abort", None)
    return list(sweep()) if sweep is not None else []
