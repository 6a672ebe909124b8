"""Custody's Celery side.

The ingest runs as leased work items (``common.run_work`` runs them); importing
the pipeline here registers its handlers in every worker. The retention sweep
crypto-shreds quarantine copies that outlived ``SEALROOM_QUARANTINE_RETENTION_DAYS``.
"""

from __future__ import annotations

from celery import shared_task

from custody.services import ingest  # noqa: F401 - registers the custody.* work handlers
from custody.services.review import quarantine_retention_sweep


@shared_task(name="custody.quarantine_retention_sweep", ignore_result=True)
def quarantine_retention() -> int:
    return quarantine_retention_sweep()
