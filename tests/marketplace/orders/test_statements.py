"""Statements: the earnings charts add up what every listing earned."""

from __future__ import annotations

import pytest

from marketplace.models import License
from marketplace.services import catalog, statements
from marketplace.services.orders import order_place
from marketplace.services.settlement import usage_settle
from tests.marketplace.orders.conftest import listing_of, use


@pytest.fixture(autouse=True)
def _fee(settings):
    settings.MARKETPLACE_FEE_BPS = 1000


def _sell(offer, buyer, actor, ref: str) -> None:
    license_ = License.objects.get(order=order_place(buyer=buyer, offer=offer, actor=actor))
    usage_settle(usage_id=use(license_, ref, "job_started", 1).pk)


class TestEarningsCharts:
    def test_a_month_in_which_two_listings_earned_shows_their_sum(self, acme, market, bolt, bob, fund):
        fund(bolt, 200_000)
        first, second = market("fixed"), market("fixed")
        _sell(first, bolt, bob, "job-1")
        _sell(second, bolt, bob, "job-2")

        rows = statements.earnings_over_time(holder=acme)
        assert len(rows) == 2, "one row per listing in the month"
        by_month = statements.earnings_by_period(rows)
        assert list(by_month.values()) == [sum(r.amount for r in rows)]
        assert sum(by_month.values()) > max(r.amount for r in rows)

    def test_two_listings_with_one_title_are_two_bars(self, alice, acme, market, bolt, bob, fund):
        fund(bolt, 200_000)
        first, second = market("fixed"), market("fixed")
        for offer in (first, second):
            catalog.listing_update(actor=alice, listing=listing_of(offer), title="Tickets")
        _sell(first, bolt, bob, "job-1")
        _sell(second, bolt, bob, "job-2")

        bars = statements.earnings_by_listing(holder=acme)
        assert len(bars) == 2
        assert sum(bars.values()) == sum(r.amount for r in statements.earnings_over_time(holder=acme))
