"""Marketplace's Celery side: the sweep (beat) and the work items it enqueues.

The sweep enqueues one work item per unsettled usage record, expiring license
and per-period license, and what a takedown left undone
(``services/takedown.py``); items are leased and retried by common/work.py, so a
worker killed mid-settlement leaves the item to be run again, and the
settlement's unique row and ledger key make the second run pay nothing.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.utils import timezone

from common.idempotency import idempotency_purge
from common.models import WorkItem
from common.work import PermanentWorkError, work_enqueue, work_handler
from marketplace.models import License
from marketplace.services import payouts  # noqa: F401 - registers marketplace.payout_send
from marketplace.services.orders import order_timeout_sweep
from marketplace.services.settlement import (
    license_expire,
    license_period_tick,
    licenses_due,
    unsettled_usage_ids,
    usage_settle,
)
from marketplace.services.takedown import takedown_sweep
from marketplace.services.withdrawal import withdrawal_sweep

SETTLE_WORK = "marketplace.settle_usage"
EXPIRE_WORK = "marketplace.license_expire"
PERIOD_WORK = "marketplace.license_period"


def settle_enqueue(usage_id: int) -> None:
    work_enqueue(kind=SETTLE_WORK, ref=str(usage_id), queue="default")


@work_handler(SETTLE_WORK)
def _settle(item: WorkItem) -> None:
    usage_settle(usage_id=int(item.ref))


@work_handler(EXPIRE_WORK)
def _expire(item: WorkItem) -> None:
    license_id = int(item.ref.split(":", 1)[0])
    if not License.objects.filter(pk=license_id).exists():
        raise PermanentWorkError(f"no license {license_id}")
    license_expire(license_id=license_id)


@work_handler(PERIOD_WORK)
def _period(item: WorkItem) -> None:
    license_period_tick(license_id=int(item.ref.split(":", 1)[0]))


def marketplace_sweep() -> dict[str, Any]:
    """Enqueue settlements, expiries, period ticks and takedowns left undone; time out approvals; purge."""
    usage_ids = unsettled_usage_ids(work_kind=SETTLE_WORK)
    for usage_id in usage_ids:
        settle_enqueue(usage_id)
    expired, period = licenses_due()
    for license_id in expired:
        work_enqueue(kind=EXPIRE_WORK, ref=str(license_id), queue="default")
    # One period item per license and day: the work item's (kind, ref) is unique for good.
    day = timezone.now().date().isoformat()
    for license_id in period:
        work_enqueue(kind=PERIOD_WORK, ref=f"{license_id}:{day}", queue="default")
    takedown = takedown_sweep()
    withdrawn = withdrawal_sweep()
    timed_out = order_timeout_sweep()
    purged = idempotency_purge()
    return {
        "settle": usage_ids,
        "expire": expired,
        "period": period,
        "takedown": takedown.as_dict(),
        "withdrawal": withdrawn,
        "timed_out": timed_out,
        "purged": purged,
    }


@shared_task(name="marketplace.sweep", ignore_result=True)
def sweep() -> dict[str, Any]:
    return marketplace_sweep()
