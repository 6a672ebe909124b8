"""Settlement through a real Celery worker, killed (SIGKILL) mid-way: nothing is paid twice."""

from __future__ import annotations

import time

import pytest

from common.models import WorkItem, WorkState
from common.work import work_sweep
from custody.models import UsageRecord
from marketplace.ledger import balance, escrow_account, ledger_check, payable_account, platform_account
from marketplace.models import AccountKind, LedgerTransaction, License, Settlement
from marketplace.services.orders import order_place
from marketplace.tasks import marketplace_sweep
from tests.marketplace.orders.conftest import use
from tests.worker.harness import TEST_LEASE_SECONDS, wait_until

pytestmark = pytest.mark.worker

USAGES = 150
TOKENS_EACH = 30_001  # 150 x 30,001 = 4,500,150 tokens, under the 5,000,000 cap


@pytest.fixture
def worker(celery_worker_process, settings):
    # The filesystem transport does not redeliver a doorbell a killed worker fetched: the sweeps
    # this test runs re-ring queued items after five seconds instead of five minutes.
    settings.WORK_REQUEUE_AFTER_SECONDS = 5
    settings.MARKETPLACE_FEE_BPS = 1000
    return celery_worker_process


def test_a_worker_killed_during_settlement_pays_each_usage_exactly_once(
    worker, market, acme, cora, bolt, bob, fund
):
    offer = market("metered")
    fund(bolt, 1_000)
    license_ = License.objects.get(order=order_place(buyer=bolt, offer=offer, actor=bob))
    # Each usage record rings the worker (custody's doorbell -> a settlement work item).
    for n in range(USAGES):
        use(license_, f"job-{n}", "tokens_trained", TOKENS_EACH)

    wait_until(
        lambda: Settlement.objects.filter(license=license_).count() >= 10,
        what="some settlements",
        interval=0.01,
    )
    worker.kill()
    settled_at_kill = Settlement.objects.filter(license=license_).count()
    assert settled_at_kill < USAGES, "the worker finished before the kill; raise USAGES"
    time.sleep(TEST_LEASE_SECONDS + 0.5)  # let the dead worker's lease expire
    worker.restart()

    def all_settled() -> bool:
        work_sweep()  # what beat does: re-ring expired leases and lost doorbells
        marketplace_sweep()
        return not UsageRecord.objects.filter(grant=license_.grant, settled_at__isnull=True).exists()

    wait_until(all_settled, what="every usage record settled", timeout=180, interval=0.5)

    license_.refresh_from_db()
    settlements = Settlement.objects.filter(license=license_)
    assert settlements.count() == USAGES
    assert settlements.values("usage_id").distinct().count() == USAGES
    expected = USAGES * TOKENS_EACH * 200 // 1_000_000  # cumulative, rounded down once
    assert license_.released == expected == sum(settlements.values_list("amount", flat=True))
    assert license_.tokens_settled == USAGES * TOKENS_EACH
    assert balance(escrow_account(order_ref=license_.order.ref, currency="EUR")) == 1_000 - expected
    paid = (
        balance(payable_account(organisation=acme, currency="EUR"))
        + balance(payable_account(organisation=cora, currency="EUR"))
        + balance(platform_account(kind=AccountKind.PLATFORM_FEE, currency="EUR"))
    )
    assert paid == expected
    releases = LedgerTransaction.objects.filter(kind="escrow.release")
    assert releases.count() == settlements.exclude(amount=0).count()
    assert not WorkItem.objects.filter(kind="marketplace.settle_usage", state=WorkState.FAILED).exists()
    assert ledger_check() == []
