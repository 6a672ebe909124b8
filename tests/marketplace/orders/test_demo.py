"""The orders demo step: a funded trainer with a paid license, and running it twice changes nothing."""

from __future__ import annotations

import io

from django.core.management.base import OutputWrapper

from marketplace import demo_orders
from marketplace.models import License, Order, TopUp


def test_buys_the_demo_offer_once(market, bolt, bob, ops):
    market("fixed")
    out = OutputWrapper(io.StringIO())
    demo_orders.seed(out)
    demo_orders.seed(out)
    assert (TopUp.objects.count(), Order.objects.count(), License.objects.count()) == (1, 1, 1)
    assert License.objects.get().grant.external_ref == License.objects.get().ref


def test_skips_without_a_published_listing(bolt, bob, ops):
    out = io.StringIO()
    demo_orders.seed(OutputWrapper(out))
    assert "skipped" in out.getvalue()
    assert not TopUp.objects.exists()
