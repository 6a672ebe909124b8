"""A settlement whose work item failed stays unsettled until an operator retries it, then settles once."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from common.models import AuditEvent, WorkItem, WorkState
from common.work import work_claim, work_retry, work_sweep
from custody.models import UsageRecord
from marketplace.ledger import balance, ledger_check, payable_account, platform_account
from marketplace.models import AccountKind, License, Settlement
from marketplace.services.orders import order_place
from marketplace.services.settlement import unsettled_usage_ids, usage_settle
from marketplace.tasks import SETTLE_WORK, marketplace_sweep
from tests.custody.conftest import drain
from tests.marketplace.orders.conftest import use


@pytest.fixture(autouse=True)
def _fee_and_few_attempts(settings):
    settings.MARKETPLACE_FEE_BPS = 1000
    settings.WORK_MAX_ATTEMPTS = 2


def owed(org) -> int:
    return balance(payable_account(organisation=org, currency="EUR"))


def fee_pot() -> int:
    return balance(platform_account(kind=AccountKind.PLATFORM_FEE, currency="EUR"))


def worker_dies(item: WorkItem, *, after=None) -> None:
    """A worker takes the item, maybe does ``after``, and is killed before completing; the sweep notices."""
    assert work_claim(item_id=item.pk, owner="doomed-worker") is not None
    if after is not None:
        after()
    WorkItem.objects.filter(pk=item.pk).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    work_sweep()


@pytest.fixture
def unsettled(market, bolt, bob, fund) -> UsageRecord:
    fund(bolt, 50_000)
    license_ = License.objects.get(order=order_place(buyer=bolt, offer=market("fixed"), actor=bob))
    usage = use(license_, "job-1", "job_started", 1)
    assert marketplace_sweep()["settle"] == [usage.pk]
    return usage


def settle_item(usage: UsageRecord) -> WorkItem:
    return WorkItem.objects.get(kind=SETTLE_WORK, ref=str(usage.pk))


class TestSettlementRetry:
    def test_a_failed_settlement_is_settled_once_after_a_retry(self, unsettled, acme, cora, ops):
        item = settle_item(unsettled)
        for _ in range(2):
            worker_dies(item)
        item.refresh_from_db()
        assert item.state == WorkState.FAILED
        assert "gave up after 2 attempts" in item.last_error

        # The failed item is the operator's now: the sweep enqueues nothing for it, and nothing runs.
        assert marketplace_sweep()["settle"] == []
        assert drain() == 0
        assert not Settlement.objects.filter(usage=unsettled).exists()
        assert UsageRecord.objects.get(pk=unsettled.pk).settled_at is None

        work_retry(item_id=item.pk, actor=ops, reason="worker pool fixed")
        assert drain() == 1
        assert Settlement.objects.filter(usage=unsettled).count() == 1
        # 50,000 with a 10 % fee: 45,000 shared 75 / 25, paid once.
        assert (owed(acme), owed(cora), fee_pot()) == (33_750, 11_250, 5_000)
        assert UsageRecord.objects.get(pk=unsettled.pk).settled_at is not None
        assert marketplace_sweep()["settle"] == []
        assert drain() == 0
        assert settle_item(unsettled).state == WorkState.DONE
        assert ledger_check() == []
        assert AuditEvent.objects.filter(action="marketplace.settle").count() == 1
        assert AuditEvent.objects.filter(action="common.work_retry", object_id=str(item.pk)).count() == 1

    def test_retrying_a_settlement_that_paid_before_its_worker_died_pays_nothing_more(
        self, unsettled, acme, cora, ops, settings
    ):
        settings.WORK_MAX_ATTEMPTS = 1
        WorkItem.objects.filter(kind=SETTLE_WORK).update(max_attempts=1)
        item = settle_item(unsettled)
        # The handler's transaction committed; the worker died before marking the item done.
        worker_dies(item, after=lambda: usage_settle(usage_id=unsettled.pk))
        item.refresh_from_db()
        assert item.state == WorkState.FAILED

        work_retry(item_id=item.pk, actor=ops, reason="re-drive to be sure")
        assert drain() == 1
        assert settle_item(unsettled).state == WorkState.DONE
        assert Settlement.objects.filter(usage=unsettled).count() == 1
        assert (owed(acme), owed(cora), fee_pot()) == (33_750, 11_250, 5_000)
        assert ledger_check() == []


def test_failed_settlements_do_not_starve_newer_usage(unsettled):
    """A sweep's batch holds the oldest unsettled usage; failed ones must not fill it for good."""
    item = settle_item(unsettled)
    for _ in range(2):
        worker_dies(item)
    license_ = License.objects.get(grant=unsettled.grant)
    newer = use(license_, "job-2", "job_started", 1)
    assert unsettled_usage_ids(work_kind=SETTLE_WORK, limit=1) == [newer.pk]
    assert marketplace_sweep()["settle"] == [newer.pk]
    assert drain() == 1
    assert UsageRecord.objects.get(pk=newer.pk).settled_at is not None
    assert UsageRecord.objects.get(pk=unsettled.pk).settled_at is None
    assert ledger_check() == []
