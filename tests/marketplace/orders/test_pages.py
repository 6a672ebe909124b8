"""Orders pages: buy from an offer, see licenses, decide as a provider, earnings chart, top-ups."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.utils import translation

from marketplace.models import License, Order, OrderState, TopUp
from marketplace.services.catalog import offer_terms_current
from marketplace.services.settlement import usage_settle
from tests.helpers import login_with_otp
from tests.marketplace.orders.conftest import use


@pytest.fixture(autouse=True)
def _fee(settings):
    settings.MARKETPLACE_FEE_BPS = 1000


def accepted(offer, key: str, **extra: str) -> dict[str, str]:
    """What the buy form posts once the buyer ticks the acceptance of the offer's current terms."""
    terms = offer_terms_current(offer)
    return {"idempotency_key": key, "terms": terms.public_id, "accept_terms": "on", **extra}


@pytest.fixture
def bob_client(bob) -> Client:
    client = Client()
    client.force_login(bob)
    return client


@pytest.fixture
def alice_client(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


class TestBuy:
    def test_shows_the_quote_and_places_one_order_per_form(self, bob_client, market, bolt, fund):
        offer = market("fixed")
        fund(bolt, 120_000)
        page = bob_client.get(f"/market/catalog/offers/{offer.public_id}/buy/")
        assert page.status_code == 200
        assert b"data-escrow" in page.content
        key = page.context["form"].initial["idempotency_key"]
        for _ in range(2):  # a double submit
            response = bob_client.post(f"/market/catalog/offers/{offer.public_id}/buy/", accepted(offer, key))
            assert response.status_code == 302
        assert Order.objects.count() == 1
        mine = bob_client.get("/market/orders/")
        license_ = License.objects.get()
        assert f'data-license="{license_.ref}"'.encode() in mine.content
        assert b"0 of 3" in mine.content  # jobs used of allowed, read from the grant

    def test_insufficient_funds_is_shown_on_the_form(self, bob_client, market, bolt, fund):
        offer = market("fixed")
        fund(bolt, 10)
        response = bob_client.post(
            f"/market/catalog/offers/{offer.public_id}/buy/", accepted(offer, "page-key-0001")
        )
        assert response.status_code == 200
        assert b"cannot cover" in response.content
        assert not Order.objects.exists()

    def test_a_provider_cannot_buy(self, alice_client, market):
        assert alice_client.get(f"/market/catalog/offers/{market('fixed').public_id}/buy/").status_code == 403


class TestProviderDecisions:
    def test_approve_and_reject_from_the_page(self, alice_client, bob_client, market, bolt, fund):
        offer = market("fixed", approval=True)
        fund(bolt, 100_000)
        for key in ("page-key-aaaa", "page-key-bbbb"):
            bob_client.post(
                f"/market/catalog/offers/{offer.public_id}/buy/", accepted(offer, key, buy_again="on")
            )
        first, second = Order.objects.order_by("pk")
        page = alice_client.get("/market/orders/received/")
        assert f'data-order="{first.ref}"'.encode() in page.content
        alice_client.post(f"/market/orders/{first.ref}/approve/")
        alice_client.post(f"/market/orders/{second.ref}/reject/", {"reason": "Competitor"})
        first.refresh_from_db()
        second.refresh_from_db()
        assert (first.state, second.state, second.reject_reason) == (
            OrderState.PAID,
            OrderState.REJECTED,
            "Competitor",
        )

    def test_a_refused_reason_is_shown_beside_its_field_and_kept(
        self, alice_client, bob_client, market, bolt, fund
    ):
        offer = market("fixed", approval=True)
        fund(bolt, 100_000)
        bob_client.post(f"/market/catalog/offers/{offer.public_id}/buy/", accepted(offer, "page-key-cccc"))
        order = Order.objects.get()
        typed = "Too long " * 40  # 360 characters; the limit is 300
        response = alice_client.post(f"/market/orders/{order.ref}/reject/", {"reason": typed})
        assert response.status_code == 422
        page = response.content.decode()
        field = re.search(rf'<input id="reason-{order.ref}"[^>]*>', page)
        assert field is not None
        assert f'value="{typed}"' in field.group(0)
        assert f'aria-describedby="reason-{order.ref}-error"' in field.group(0)
        error = re.search(rf'<p class="field__errors" id="reason-{order.ref}-error">([^<]*)</p>', page)
        assert error is not None and "at most 300 characters" in error.group(1)
        order.refresh_from_db()
        assert order.state == OrderState.PENDING
        blank = alice_client.post(f"/market/orders/{order.ref}/reject/", {"reason": "   "})
        assert blank.status_code == 422
        assert "This field is required." in blank.content.decode()


class TestStatements:
    def test_earnings_chart_and_csv_neutralise_formulas(self, alice_client, alice, market, bolt, bob, fund):
        from marketplace.services import catalog
        from marketplace.services.orders import order_place

        offer = market("fixed")
        catalog.listing_update(actor=alice, listing=offer.listing, title="=HYPERLINK(evil)")
        fund(bolt, 50_000)
        license_ = License.objects.get(order=order_place(buyer=bolt, offer=offer, actor=bob))
        usage_settle(usage_id=use(license_, "job-1", "job_started", 1).pk)
        page = alice_client.get("/market/earnings/")
        assert page.status_code == 200
        assert b'data-chart="earnings"' in page.content
        assert b"<script" not in page.content.split(b"<main")[-1]
        exported = alice_client.get("/market/earnings/?export=csv")
        text = b"".join(exported.streaming_content).decode()
        assert "'=HYPERLINK(evil)" in text
        assert "33750" in text  # the CSV's amount_minor column
        # The page's table, chart values and balances are in major units with the currency's symbol.
        shown = page.content.decode()
        assert shown.count("€337.50") >= 3 and "33750" not in shown

    def test_a_payout_is_typed_in_major_units(self, alice_client, market, bolt, bob, fund):
        from marketplace.models import Payout
        from marketplace.services.orders import order_place

        fund(bolt, 50_000)
        license_ = License.objects.get(order=order_place(buyer=bolt, offer=market("fixed"), actor=bob))
        usage_settle(usage_id=use(license_, "job-1", "job_started", 1).pk)
        page = alice_client.get("/market/earnings/").content.decode()
        key = re.search(r'name="idempotency_key" value="([^"]+)"', page)
        assert key is not None
        form = {"idempotency_key": key.group(1), "currency": "EUR"}
        refused = alice_client.post("/market/earnings/", {**form, "amount": "300.001"})
        assert "EUR has 2 decimal places" in refused.content.decode()
        too_much = alice_client.post("/market/earnings/", {**form, "amount": "400.00"})
        assert "is owed €337.50; €400.00 was asked" in too_much.content.decode()
        assert not Payout.objects.exists()
        sent = alice_client.post("/market/earnings/", {**form, "amount": "300.00"})
        assert sent.status_code == 302
        assert Payout.objects.get().amount == 30_000
        assert "€300.00" in alice_client.get("/market/earnings/").content.decode()

    def test_spend_page(self, bob_client, market, bolt, bob, fund):
        from marketplace.services.orders import order_place

        fund(bolt, 50_000)
        order_place(buyer=bolt, offer=market("fixed"), actor=bob)
        page = bob_client.get("/market/spend/")
        assert page.status_code == 200
        shown = page.content.decode()
        assert "€500.00" in shown
        assert not re.search(r"\b50,?000\b", shown), "an amount shown in minor units"

    def test_money_follows_the_active_language(self, bob_client, market, bolt, bob, fund):
        from marketplace.services.orders import order_place

        fund(bolt, 60_000)
        order_place(buyer=bolt, offer=market("fixed"), actor=bob)
        with translation.override("de"):
            german = bob_client.get("/market/orders/").content.decode()
        english = bob_client.get("/market/orders/").content.decode()
        # Escrow left 500.00 and the balance of 100.00, each by the locale's rules, never "50000 EUR".
        assert "500,00\xa0€" in german and "100,00\xa0€" in german
        assert "€500.00" in english and "€100.00" in english
        for page in (german, english):
            assert not re.search(r"\b\d{4,} EUR\b", page)


def test_an_operator_records_a_top_up(ops, bolt):
    client = Client()
    login_with_otp(client, ops)
    response = client.post(
        "/market/ops/topups/",
        {"organisation": bolt.pk, "amount": "7.00", "currency": "EUR", "external_ref": "bank-1"},
    )
    assert response.status_code == 302
    assert TopUp.objects.get().amount == 700
    assert "€7.00" in client.get("/market/ops/topups/").content.decode()
    invalid = client.post(
        "/market/ops/topups/",
        {"organisation": bolt.pk, "amount": "7.001", "currency": "EUR", "external_ref": "bank-2"},
    )
    assert invalid.status_code == 200
    assert TopUp.objects.count() == 1
