"""The marketplace's list pages and endpoints: the same queries for 3 or 9 rows, and a page-size bound.

Rows are made through the services (listings with their offers and rights,
orders with their listings, offers, buyers and licenses, settlements, payouts
and rights proposals), so each row has the related objects a real one has.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.urls import reverse

from common.models import Organisation, User
from marketplace import pages_catalog, pages_orders
from marketplace.models import License, Listing, Offer
from marketplace.services import catalog, rights
from marketplace.services.orders import order_place
from marketplace.services.payouts import payout_request
from marketplace.services.settlement import usage_settle
from tests.list_queries import (
    PAGE,
    N,
    assert_page_bounded,
    load,
    measure,
    measure_api,
    measure_page,
    next_link,
    serial,
    signed_in,
)
from tests.marketplace.orders.conftest import PRICES, terms_doc, use

pytestmark = pytest.mark.django_db

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


@pytest.fixture
def add_earnings(add_orders) -> Callable[[int], None]:
    """``add_earnings(k)``: k settled orders, each on its own listing of Acme's (and Cora's)."""

    def _add(k: int) -> None:
        for license_ in add_orders(k):
            usage_settle(usage_id=use(license_, f"job-{serial()}", "job_started", 1).pk)

    return _add


@pytest.fixture
def add_payouts(acme, alice, add_earnings) -> Callable[[int], None]:
    """``add_payouts(k)``: k payouts of Acme's, paid from one settled order's earnings."""
    add_earnings(1)

    def _add(k: int) -> None:
        for _ in range(k):
            payout_request(organisation=acme, amount=1, currency="EUR", actor=alice)

    return _add


@pytest.fixture
def add_topups(fund) -> Callable[[int], None]:
    """``add_topups(k)``: k top-ups, each of a new trainer organisation."""

    def _add(k: int) -> None:
        for _ in range(k):
            n = serial()
            fund(Organisation.objects.create(name=f"Payer {n}", slug=f"payer-{n}", is_trainer=True), 1_000)

    return _add


def add_proposals(listing: Listing, actor: User, shares: dict[int, int], k: int) -> None:
    """``k`` rights proposals on the listed version, each superseding the one before it."""
    for _ in range(k):
        rights.allocation_propose(actor=actor, version=listing.version, shares=shares)


def add_offers(listing: Listing, actor: User, k: int) -> None:
    for _ in range(k):
        catalog.offer_create(
            actor=actor,
            listing=listing,
            name=f"Offer {serial()}",
            terms=terms_doc(),
            price=PRICES["fixed"],
        )


class TestCatalogPages:
    def test_the_catalog_is_flat_and_paginated(self, bob, add_listings, monkeypatch):
        monkeypatch.setattr(pages_catalog, "LISTINGS_PER_PAGE", PAGE)
        client = signed_in(bob)
        measure_page(client, reverse("marketplace:catalog"), add_listings, "catalog")
        assert next_link(client, reverse("marketplace:catalog"), {"q": "Tickets"}) == "?q=Tickets&page=2"

    def test_the_providers_listings_are_flat_and_paginated(self, alice, add_listings, monkeypatch):
        monkeypatch.setattr(pages_catalog, "LISTINGS_PER_PAGE", PAGE)
        client = signed_in(alice)
        measure_page(client, reverse("marketplace:provider_listings"), add_listings, "provider listings")

    @pytest.mark.parametrize("route", ["marketplace:listing", "marketplace:listing_edit"])
    def test_a_listings_offers_cost_the_same_queries_for_few_or_many(self, route, alice, market):
        listing = Listing.objects.get(offers=market())
        client = signed_in(alice)
        url = reverse(route, args=[listing.public_id])
        measure(lambda: load(client, url), lambda k: add_offers(listing, alice, k), f"{route} offers")

    def test_a_trainer_sees_a_listings_offers_in_flat_queries(self, bob, alice, market):
        listing = Listing.objects.get(offers=market())
        client = signed_in(bob)
        url = reverse("marketplace:listing", args=[listing.public_id])
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

    def test_the_earnings_statement_is_flat(self, alice, add_earnings):
        client = signed_in(alice)
        measure(lambda: load(client, reverse("marketplace:earnings")), add_earnings, "earnings")

    def test_the_payouts_on_the_earnings_statement_are_flat_and_paginated(self, alice, add_payouts):
        client = signed_in(alice)
        url = reverse("marketplace:earnings")
        measure_page(client, url, add_payouts, "earnings payouts", context_key="payouts")

    def test_the_topups_list_is_flat(self, ops, add_topups):
        client = signed_in(ops, otp=True)
        url = reverse("marketplace:topups")
        measure_page(client, url, add_topups, "topups", context_key="topups")


class TestMarketplaceApi:
    def test_the_catalog_is_flat_and_paginated(self, bob, bolt, add_listings, token_for):
        client = token_for(bob, bolt, ["read"])
        measure_api(client, reverse("api-catalog-listings"), add_listings, "api catalog")

    @pytest.mark.parametrize(
        ("route", "trainer"), [("api-orders", True), ("api-orders-received", False), ("api-licenses", True)]
    )
    def test_the_order_lists_are_flat_and_paginated(
        self, route, trainer, bob, bolt, alice, acme, add_orders, token_for
    ):
        client = token_for(bob, bolt, ["read"]) if trainer else token_for(alice, acme, ["read"])
        measure_api(client, reverse(route), add_orders, route)

    def test_the_topups_are_flat_and_paginated(self, ops, add_topups):
        client = signed_in(ops, otp=True)
        measure_api(client, reverse("api-ops-topups"), add_topups, "api topups")

    def test_the_payouts_are_flat_and_paginated(self, alice, acme, add_payouts, token_for):
        client = token_for(alice, acme, ["read"])
        measure_api(client, reverse("api-payouts"), add_payouts, "api payouts")

    def test_a_listings_rights_history_is_flat(self, alice, acme, cora, market, token_for):
        # Unpaginated: the history of one version's allocations, each with its shares and holders.
        listing = Listing.objects.get(offers=market())
        client = token_for(alice, acme, ["read"])
        url = reverse("api-catalog-rights", args=[listing.public_id])
        shares = {acme.pk: 6_000, cora.pk: 4_000}
        _few, many = measure(
            lambda: load(client, url), lambda k: add_proposals(listing, alice, shares, k), "api rights"
        )
        allocations = many.response.json()["allocations"]
        # The default in force, then the proposals: Cora has not approved, so each supersedes the last.
        assert len(allocations) == 1 + 3 * N
        assert {s["holder_id"] for s in allocations[0]["shares"]} == {acme.public_id, cora.public_id}

    @pytest.mark.parametrize("bucket", ["month", "day"])
    def test_the_earnings_statement_is_flat(self, bucket, alice, acme, add_earnings, token_for):
        # Unpaginated: a row per period and listing earned from.
        client = token_for(alice, acme, ["read"])
        url = reverse("api-statements-earnings")
        _few, many = measure(lambda: load(client, url, {"bucket": bucket}), add_earnings, "api earnings")
        assert len(many.response.json()) == 3 * N

    def test_the_spend_statement_is_flat(self, bob, bolt, add_orders, token_for):
        # Unpaginated: a row per order.
        client = token_for(bob, bolt, ["read"])
        url = reverse("api-statements-spend")
        _few, many = measure(lambda: load(client, url), add_orders, "api spend")
        assert len(many.response.json()) == 3 * N
