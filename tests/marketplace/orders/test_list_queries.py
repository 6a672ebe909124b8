"""The marketplace's list pages and endpoints: the same queries for 3 or 9 rows, and a page-size bound.

Rows are made through the services (listings with their offers and rights,
orders with their listings, offers, buyers and licenses), so each row has the
related objects a real one has.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import count

import pytest
from django.urls import reverse

from common.models import Organisation, User
from marketplace import pages_catalog, pages_orders
from marketplace.models import License, Listing, Offer
from marketplace.services import catalog
from marketplace.services.orders import order_place
from marketplace.services.settlement import usage_settle
from tests.list_queries import (
    PAGE,
    N,
    assert_api_bounded,
    assert_page_bounded,
    load,
    measure,
    signed_in,
)
from tests.marketplace.orders.conftest import PRICES, terms_doc, use

pytestmark = pytest.mark.django_db

SERIAL = count(1)
FUNDS = 10_000_000


@pytest.fixture
def add_listings(market) -> Callable[[int], list[Offer]]:
    """``add_listings(k)``: k published listings, each with an offer and a default rights allocation."""
    return lambda k: [market() for _ in range(k)]


@pytest.fixture
def add_orders(market, bolt, bob, fund) -> Callable[..., list[License]]:
    """``add_orders(k, approval=False)``: k orders by Bolt, each on its own listing; returns the licenses."""
    fund(bolt, FUNDS)

    def _add(k: int, approval: bool = False) -> list[License]:
        orders = [order_place(buyer=bolt, offer=market(approval=approval), actor=bob) for _ in range(k)]
        return list(License.objects.filter(order__in=orders))

    return _add


def add_offers(listing: Listing, actor: User, k: int) -> None:
    for _ in range(k):
        catalog.offer_create(
            actor=actor,
            listing=listing,
            name=f"Offer {next(SERIAL)}",
            terms=terms_doc(),
            price=PRICES["fixed"],
        )


class TestCatalogPages:
    def test_the_catalog_is_flat_and_paginated(self, bob, add_listings, monkeypatch):
        monkeypatch.setattr(pages_catalog, "LISTINGS_PER_PAGE", PAGE)
        client = signed_in(bob)
        _few, many = measure(lambda: load(client, reverse("marketplace:catalog")), add_listings, "catalog")
        assert_page_bounded(many, rows=3 * N)

    def test_the_providers_listings_are_flat_and_paginated(self, alice, add_listings, monkeypatch):
        monkeypatch.setattr(pages_catalog, "LISTINGS_PER_PAGE", PAGE)
        client = signed_in(alice)
        url = reverse("marketplace:provider_listings")
        _few, many = measure(lambda: load(client, url), add_listings, "provider listings")
        assert_page_bounded(many, rows=3 * N)

    @pytest.mark.parametrize("route", ["marketplace:listing", "marketplace:listing_edit"])
    def test_a_listings_offers_cost_the_same_queries_for_few_or_many(self, route, alice, market):
        listing = Listing.objects.get(offers=market())
        client = signed_in(alice)
        url = reverse(route, args=[listing.pk])
        measure(lambda: load(client, url), lambda k: add_offers(listing, alice, k), f"{route} offers")

    def test_a_trainer_sees_a_listings_offers_in_flat_queries(self, bob, alice, market):
        listing = Listing.objects.get(offers=market())
        client = signed_in(bob)
        url = reverse("marketplace:listing", args=[listing.pk])
        measure(
            lambda: load(client, url), lambda k: add_offers(listing, alice, k), "listing offers (trainer)"
        )


class TestOrderPages:
    @pytest.fixture(autouse=True)
    def _small_pages(self, monkeypatch):
        for name in ("ORDERS_PER_PAGE", "LICENSES_PER_PAGE", "PAYOUTS_PER_PAGE", "TOPUPS_PER_PAGE"):
            monkeypatch.setattr(pages_orders, name, PAGE)

    def test_the_buyers_orders_and_licenses_are_flat_and_paginated(self, bob, add_orders):
        client = signed_in(bob)
        _few, many = measure(
            lambda: load(client, reverse("marketplace:orders")), add_orders, "orders and licenses"
        )
        assert_page_bounded(many, rows=3 * N, context_key="orders")
        assert_page_bounded(many, rows=3 * N, context_key="licenses_page")

    def test_each_list_on_the_orders_page_turns_its_own_page(self, bob, add_orders):
        add_orders(3 * N)
        client = signed_in(bob)
        loaded = load(client, reverse("marketplace:orders"), {"page": 2, "licenses_page": 1})
        context = loaded.response.context
        assert (context["orders"].number, context["licenses_page"].number) == (2, 1)
        body = loaded.response.content.decode()
        # The licenses' "next" link keeps the orders on page 2.
        assert "page=2&amp;licenses_page=2" in body
        assert len(context["orders"].object_list) == 3 * N - PAGE

    def test_the_received_orders_are_flat_and_paginated(self, alice, add_orders):
        client = signed_in(alice)
        url = reverse("marketplace:orders_received")

        def both_states(k: int) -> None:
            # Both lists have rows at N and at 3N, so each load runs the same statements.
            add_orders(k - k // 2, approval=True)
            add_orders(k // 2)

        _few, many = measure(lambda: load(client, url), both_states, "received orders")
        decided = many.response.context["decided"]
        pending = many.response.context["pending"]
        assert decided.paginator.count + pending.paginator.count == 3 * N
        assert len(decided.object_list) <= PAGE and len(pending.object_list) <= PAGE

    def test_the_spend_statement_is_flat_and_paginated(self, bob, add_orders):
        client = signed_in(bob)
        _few, many = measure(lambda: load(client, reverse("marketplace:spend")), add_orders, "spend")
        assert_page_bounded(many, rows=3 * N)
        assert len(many.response.context["rows"]) == PAGE

    def test_the_earnings_statement_is_flat(self, alice, add_orders):
        def earn(k: int) -> None:
            for license_ in add_orders(k):
                usage_settle(usage_id=use(license_, f"job-{next(SERIAL)}", "job_started", 1).pk)

        client = signed_in(alice)
        measure(lambda: load(client, reverse("marketplace:earnings")), earn, "earnings")

    def test_the_topups_list_is_flat(self, ops, fund):
        def topups(k: int) -> None:
            for _ in range(k):
                org = Organisation.objects.create(
                    name=f"Payer {next(SERIAL)}", slug=f"payer-{next(SERIAL)}", is_trainer=True
                )
                fund(org, 1_000)

        client = signed_in(ops, otp=True)
        _few, many = measure(lambda: load(client, reverse("marketplace:topups")), topups, "topups")
        assert_page_bounded(many, rows=3 * N, context_key="topups")


class TestMarketplaceApi:
    def test_the_catalog_is_flat_and_paginated(self, bob, bolt, add_listings, token_for):
        client = token_for(bob, bolt, ["read"])
        url = reverse("api-catalog-listings")
        _few, many = measure(lambda: load(client, url, {"page_size": PAGE}), add_listings, "api catalog")
        assert_api_bounded(many, rows=3 * N)

    def test_the_orders_are_flat_and_paginated(self, bob, bolt, add_orders, token_for):
        client = token_for(bob, bolt, ["read"])
        url = reverse("api-orders")
        _few, many = measure(lambda: load(client, url, {"page_size": PAGE}), add_orders, "api orders")
        assert_api_bounded(many, rows=3 * N)

    def test_the_received_orders_are_flat_and_paginated(self, alice, acme, add_orders, token_for):
        client = token_for(alice, acme, ["read"])
        url = reverse("api-orders-received")
        _few, many = measure(lambda: load(client, url, {"page_size": PAGE}), add_orders, "api received")
        assert_api_bounded(many, rows=3 * N)

    def test_the_licenses_are_flat_and_paginated(self, bob, bolt, add_orders, token_for):
        client = token_for(bob, bolt, ["read"])
        url = reverse("api-licenses")
        _few, many = measure(lambda: load(client, url, {"page_size": PAGE}), add_orders, "api licenses")
        assert_api_bounded(many, rows=3 * N)

    def test_the_topups_are_flat_and_paginated(self, ops, fund):
        def topups(k: int) -> None:
            for _ in range(k):
                org = Organisation.objects.create(
                    name=f"Payer {next(SERIAL)}", slug=f"payer-{next(SERIAL)}", is_trainer=True
                )
                fund(org, 1_000)

        client = signed_in(ops, otp=True)
        url = reverse("api-ops-topups")
        _few, many = measure(lambda: load(client, url, {"page_size": PAGE}), topups, "api topups")
        assert_api_bounded(many, rows=3 * N)
