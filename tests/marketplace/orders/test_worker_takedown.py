"""Takedowns through a real Celery worker, SIGKILLed on a seeded schedule: each refund lands exactly once.

Versions with many active licenses (some with usage recorded, so the refund
settles first) are taken down one after another; custody's doorbell becomes
one work item per listing and license, and the drill (tests/worker/drill.py)
kills the worker mid-item. The offline checkers of chaos/checks.py judge the
history: every listing withdrawn and every license revoked, refunded and its
licensee told, each exactly once; the ledger and each license's escrow in
agreement; the audit chain intact; no takedown item left unfinished.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from chaos.checks import Check, check_audit_chain, check_ledger, check_takedown
from common.models import WorkItem, WorkState
from common.work import work_sweep
from custody.models import DatasetVersion
from custody.services import version_takedown
from marketplace.models import License, LicenseState, Offer
from marketplace.services.orders import order_place
from marketplace.services.takedown import TAKEDOWN_KINDS
from marketplace.tasks import marketplace_sweep
from tests.marketplace.orders.conftest import listing_of, use
from tests.worker.drill import KillDrill, use_worker_dirs

pytestmark = pytest.mark.worker

ESCROW = 1_000  # each metered license escrows its cap of 5,000,000 tokens at 2.00 per million
TAKEDOWN_CHECKS: list[Check] = [check_takedown, check_ledger, check_audit_chain]


@pytest.fixture
def worker(celery_worker_process, settings):
    use_worker_dirs(settings, celery_worker_process)
    settings.WORK_REQUEUE_AFTER_SECONDS = 5  # see test_worker_settlement.py
    settings.MARKETPLACE_FEE_BPS = 1000
    return celery_worker_process


def recover() -> None:
    """What beat does: re-ring expired leases and lost doorbells, enqueue what takedowns left undone."""
    work_sweep()
    marketplace_sweep()


class TakedownStream:
    """Versions, each with ``licenses`` active licenses, taken down one at a time, each acknowledged."""

    def __init__(
        self,
        drill: KillDrill,
        sell: Callable[[int], tuple[Offer, list[License]]],
        *,
        licenses: int,
        limit: int,
    ) -> None:
        self.drill, self.sell, self.licenses, self.limit = drill, sell, licenses, limit
        self.versions: list[int] = []

    def take_down(self) -> None:
        offer, licenses = self.sell(self.licenses)
        listing = listing_of(offer)
        self.drill.invoke("takedown", version=listing.version_id)
        version_takedown(
            actor=None, version=DatasetVersion.objects.get(pk=listing.version_id), reason="court order"
        )
        self.versions.append(listing.version_id)
        self.drill.ok(
            "takedown",
            version=listing.version_id,
            listings=[listing.pk],
            orders=[],
            licenses=[license_.pk for license_ in licenses],
        )

    def outstanding(self) -> bool:
        return (
            WorkItem.objects.filter(kind__in=TAKEDOWN_KINDS).exclude(state=WorkState.DONE).exists()
            or License.objects.filter(version_id__in=self.versions, state=LicenseState.ACTIVE).exists()
        )

    def feed(self) -> None:
        if not self.outstanding():
            assert len(self.versions) < self.limit, (
                "the takedowns ran out before the schedule; raise the limit"
            )
            self.take_down()

    def busy(self) -> str | None:
        item = self.drill.holding()
        return f"{item.kind} {item.ref} (attempt {item.attempts})" if item is not None else None

    def done(self) -> bool:
        return not self.outstanding()


@pytest.fixture
def sell(market, bolt, bob, fund) -> Callable[[int], tuple[Offer, list[License]]]:
    """``sell(n)``: a new version's metered offer sold ``n`` times to Bolt; every other license has usage."""

    def _sell(n: int) -> tuple[Offer, list[License]]:
        offer = market("metered")
        fund(bolt, ESCROW * n)
        licenses = [
            License.objects.get(order=order_place(buyer=bolt, offer=offer, actor=bob)) for _ in range(n)
        ]
        for license_ in licenses[::2]:
            use(license_, "job-1", "tokens_trained", 1_000_000)
        return offer, licenses

    return _sell


def takedown_drill(worker, sell, *, name: str, faults: int, latest: float, licenses: int, limit: int) -> None:
    with KillDrill(
        name,
        worker,
        kinds=TAKEDOWN_KINDS,
        faults=faults,
        earliest=0.2,
        latest=latest,
        recover=recover,
        sweep_every=2.0,
    ) as drill:
        stream = TakedownStream(drill, sell, licenses=licenses, limit=limit)
        stream.take_down()
        drill.strike_all(busy=stream.busy, feed=stream.feed, done=stream.done, poll=0.02)
        drill.finish(stream.done, what="every takedown undone", timeout=300)
        assert drill.check(TAKEDOWN_CHECKS) == []
    assert drill.kills == faults
    revoked = License.objects.filter(version_id__in=stream.versions)
    assert revoked.count() == licenses * len(stream.versions)
    assert set(revoked.values_list("refunded", flat=True)) == {ESCROW, ESCROW - 200}


def test_a_worker_killed_during_a_takedown_refunds_each_license_exactly_once(worker, sell):
    takedown_drill(worker, sell, name="takedown-quick", faults=1, latest=0.8, licenses=20, limit=4)


@pytest.mark.proof
@pytest.mark.timeout(900)
def test_twenty_kills_during_takedowns_refund_each_license_exactly_once(worker, sell):
    takedown_drill(worker, sell, name="takedown-proof", faults=20, latest=12.0, licenses=30, limit=60)
