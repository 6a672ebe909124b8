"""The buy page: a recap of the terms, an explicit acceptance the server checks, only the inputs the
price model needs, a warning before buying an offer already held, and Buy only for those who may."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from common.models import AuditEvent
from marketplace.models import Offer, Order, OrderState
from marketplace.services import catalog
from marketplace.services.catalog import offer_terms_current
from marketplace.services.orders import order_place
from tests.factories import MembershipFactory, UserFactory
from tests.marketplace.catalog.conftest import terms_doc
from tests.marketplace.orders.conftest import PRICES


@pytest.fixture(autouse=True)
def _fee(settings):
    settings.MARKETPLACE_FEE_BPS = 1000


@pytest.fixture
def bob_client(bob) -> Client:
    client = Client()
    client.force_login(bob)
    return client


@pytest.fixture
def bolt_viewer(bolt):
    user = UserFactory(username="vic")
    MembershipFactory(user=user, organisation=bolt, role="viewer")
    return user


def buy_url(offer: Offer) -> str:
    return f"/market/catalog/offers/{offer.public_id}/buy/"


def listing_url(offer: Offer) -> str:
    return f"/market/catalog/{offer.listing.public_id}/"


def form_of(client: Client, offer: Offer) -> dict[str, str]:
    """The hidden fields of the buy form as the page rendered them."""
    page = client.get(buy_url(offer))
    assert page.status_code == 200
    form = page.context["form"]
    return {"idempotency_key": form.initial["idempotency_key"], "terms": str(form.initial["terms"])}


class TestAcceptance:
    def test_without_the_acceptance_no_order_is_placed(self, bob_client, market, bolt, fund):
        offer = market("fixed")
        fund(bolt, 120_000)
        response = bob_client.post(buy_url(offer), form_of(bob_client, offer))
        assert response.status_code == 200
        assert response.context["form"].errors["accept_terms"] == ["Accept the terms to place the order."]
        assert "Accept the terms to place the order." in response.content.decode()
        assert not Order.objects.exists()

    def test_the_order_records_the_accepted_terms_snapshot(self, bob_client, market, bolt, fund):
        offer = market("fixed")
        fund(bolt, 120_000)
        posted = {**form_of(bob_client, offer), "accept_terms": "on"}
        response = bob_client.post(buy_url(offer), posted)
        assert response.status_code == 302
        order = Order.objects.get()
        assert order.terms.public_id == offer_terms_current(offer).public_id == posted["terms"]
        assert order.terms_accepted_at is not None
        event = AuditEvent.objects.get(action="marketplace.order_place", object_id=order.ref)
        assert event.details["terms_accepted"] is True

    def test_terms_changed_after_reading_them_are_refused(self, bob_client, alice, market, bolt, fund):
        offer = market("fixed")
        fund(bolt, 120_000)
        posted = {**form_of(bob_client, offer), "accept_terms": "on"}
        doc = terms_doc()
        doc["permission"]["weights_may_leave"] = False
        catalog.offer_terms_update(actor=alice, offer=offer, terms=doc, price=PRICES["fixed"])
        response = bob_client.post(buy_url(offer), posted)
        assert response.status_code == 200
        assert "changed after you accepted them" in response.content.decode()
        assert not Order.objects.exists()

    def test_the_form_names_the_terms_by_public_id_and_refuses_an_integer(
        self, bob_client, market, bolt, fund
    ):
        offer = market("fixed")
        fund(bolt, 120_000)
        posted = {**form_of(bob_client, offer), "accept_terms": "on"}
        assert posted["terms"] == offer_terms_current(offer).public_id
        stale = {**posted, "terms": str(offer_terms_current(offer).pk)}  # a page from before public ids
        response = bob_client.post(buy_url(offer), stale)
        assert response.status_code == 200
        assert "This form is out of date or incomplete." in response.content.decode()
        unknown = {**posted, "terms": "trm_0000000000000000"}
        assert "changed after you accepted them" in bob_client.post(buy_url(offer), unknown).content.decode()
        assert not Order.objects.exists()

    def test_an_order_placed_without_the_page_records_no_acceptance(self, bob, market, bolt, fund):
        fund(bolt, 120_000)
        order = order_place(buyer=bolt, offer=market("fixed"), actor=bob)
        assert order.terms_accepted_at is None


class TestRecap:
    def test_the_recap_names_what_the_buyer_agrees_to_and_what_is_charged_now(
        self, bob_client, alice, market
    ):
        offer = market("fixed", max_licenses=2)
        doc = terms_doc(
            duty={
                "attribution": "Acme support tickets",
                "differential_privacy": {"required": True, "epsilon_cap": 4.0},
            }
        )
        doc["permission"]["weights_may_leave"] = False
        doc["constraint"]["max_licenses"] = 2
        catalog.offer_terms_update(actor=alice, offer=offer, terms=doc, price=PRICES["fixed"])
        page = bob_client.get(buy_url(offer)).content.decode()
        recap = re.search(r"<dl class=\"details\" data-terms-recap>(.*?)</dl>", page, re.S)
        assert recap is not None
        text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", recap.group(1)))
        for expected in (
            "Purposes",
            "Allowed training",
            "Stay in custody",
            "ε at most 4.0",
            "Epochs per job",
            "Platform tokens",
            "“Acme support tickets”",
            "at most 2 licenses",
            "Charged now",
        ):
            assert expected in text, (expected, text)
        assert "€500.00" in text  # the fixed price, in major units, charged now into escrow
        assert "minor units" not in page


class TestPriceModelInputs:
    @pytest.mark.parametrize("model", ["fixed", "metered"])
    def test_no_periods_input_unless_the_offer_is_priced_per_period(self, bob_client, market, model):
        page = bob_client.get(buy_url(market(model))).content.decode()
        assert 'name="periods"' not in page
        assert "Periods" not in page

    def test_a_per_period_offer_asks_how_many_periods(self, bob_client, market, bolt, fund):
        offer = market("period")
        fund(bolt, 120_000)
        page = bob_client.get(buy_url(offer)).content.decode()
        assert 'name="periods"' in page
        posted = {**form_of(bob_client, offer), "accept_terms": "on", "periods": "3"}
        assert bob_client.post(buy_url(offer), posted).status_code == 302
        assert Order.objects.get().periods == 3

    def test_periods_sent_for_a_fixed_offer_are_ignored(self, bob_client, market, bolt, fund):
        offer = market("fixed")
        fund(bolt, 120_000)
        posted = {**form_of(bob_client, offer), "accept_terms": "on", "periods": "7"}
        assert bob_client.post(buy_url(offer), posted).status_code == 302
        assert Order.objects.get().periods is None


class TestAlreadyHeld:
    def test_a_second_purchase_warns_and_needs_a_confirmation(self, bob_client, bob, market, bolt, fund):
        offer = market("fixed")
        fund(bolt, 200_000)
        first = order_place(buyer=bolt, offer=offer, actor=bob)
        page = bob_client.get(buy_url(offer))
        assert b"data-already-held" in page.content
        assert first.license.ref in page.content.decode()
        posted = {**form_of(bob_client, offer), "accept_terms": "on"}
        refused = bob_client.post(buy_url(offer), posted)
        assert refused.status_code == 200
        assert "confirm that you want another license" in refused.content.decode()
        assert Order.objects.count() == 1
        assert bob_client.post(buy_url(offer), {**posted, "buy_again": "on"}).status_code == 302
        assert Order.objects.count() == 2

    def test_an_order_awaiting_approval_counts_as_held(self, bob_client, bob, market, bolt, fund):
        offer = market("fixed", approval=True)
        fund(bolt, 200_000)
        pending = order_place(buyer=bolt, offer=offer, actor=bob)
        assert pending.state == OrderState.PENDING
        page = bob_client.get(buy_url(offer)).content.decode()
        assert "data-already-held" in page and pending.ref in page

    def test_resubmitting_the_same_form_is_not_asked_to_confirm(self, bob_client, market, bolt, fund):
        offer = market("fixed")
        fund(bolt, 200_000)
        posted = {**form_of(bob_client, offer), "accept_terms": "on"}
        assert bob_client.post(buy_url(offer), posted).status_code == 302
        assert bob_client.post(buy_url(offer), posted).status_code == 302  # a double submit
        assert Order.objects.count() == 1

    def test_no_warning_for_a_first_purchase(self, bob_client, market):
        page = bob_client.get(buy_url(market("fixed"))).content.decode()
        assert "data-already-held" not in page
        assert 'name="buy_again"' not in page


class TestWhoSeesBuy:
    def test_a_trainer_member_sees_buy_on_the_listing(self, bob_client, market):
        offer = market("fixed")
        assert buy_url(offer).encode() in bob_client.get(listing_url(offer)).content

    def test_a_read_only_member_sees_no_buy_and_cannot_order(self, bolt_viewer, market, bolt, fund):
        offer = market("fixed")
        fund(bolt, 120_000)
        client = Client()
        client.force_login(bolt_viewer)
        listing = client.get(listing_url(offer))
        assert listing.status_code == 200
        assert b"Buy a license" not in listing.content
        page = client.get(buy_url(offer))
        assert page.status_code == 200
        assert b"Place order" not in page.content
        assert b"you are viewer" in page.content
        posted = {**form_of(client, offer), "accept_terms": "on"}
        assert client.post(buy_url(offer), posted).status_code == 403
        assert not Order.objects.exists()

    def test_a_provider_sees_no_buy_on_its_own_listing(self, alice, market):
        offer = market("fixed")
        client = Client()
        client.force_login(alice)
        assert b"Buy a license" not in client.get(listing_url(offer)).content
