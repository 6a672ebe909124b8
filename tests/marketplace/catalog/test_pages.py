"""Catalog pages: the trainer's catalog and listing page, the provider's editors."""

from __future__ import annotations

from typing import cast

import pytest
from django.test import Client

from common.models import Organisation
from marketplace.models import ListingState, Offer, OfferTerms
from marketplace.services import catalog
from tests.marketplace.catalog.conftest import terms_doc

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def html(response) -> str:
    return response.content.decode()


OFFER_FORM = {
    "name": "Research only",
    "purposes": ["research"],
    "job_templates": ["causal_lm_lora"],
    "max_jobs": "2",
    "max_epochs": "1",
    "max_tokens": "1000000",
    "term_days": "30",
    "attribution": "Acme",
    "price_model": "metered",
    "unit_price": "1.50",  # major units: 150 cents
}


class TestTrainerPages:
    def test_catalog_lists_and_searches_published_listings(self, bob, published, alice, sealed_rows):
        catalog.listing_create(actor=alice, version=sealed_rows(), title="Hidden draft")
        client = client_for(bob)
        page = html(client.get("/market/catalog/"))
        assert "Support tickets" in page and "Hidden draft" not in page
        assert "Support tickets" not in html(client.get("/market/catalog/", {"q": "astronomy"}))
        assert "Support tickets" in html(client.get("/market/catalog/", {"tag": "support"}))

    def test_listing_page_shows_terms_in_plain_words_and_a_quote(self, bob, published):
        page = html(client_for(bob).get(f"/market/catalog/{published.public_id}/"))
        assert "non-commercial research" in page
        assert "Up to 3 training jobs" in page
        assert "escrowed at order" in page.lower() or "Escrowed at order" in page
        assert "Download Croissant metadata" in page
        assert "Acme Corpora" in page  # the rights holder

    def test_an_unapproved_preview_stays_hidden_from_trainers(self, bob, alice, published):
        published.preview = [{"record_id": 0, "text": {"text": "PREVIEW-SENTINEL"}, "lang": "en"}]
        published.save(update_fields=["preview"])
        assert "PREVIEW-SENTINEL" not in html(client_for(bob).get(f"/market/catalog/{published.public_id}/"))
        assert "PREVIEW-SENTINEL" in html(client_for(alice).get(f"/market/catalog/{published.public_id}/"))
        catalog.preview_approve(actor=alice, listing=published)
        assert "PREVIEW-SENTINEL" in html(client_for(bob).get(f"/market/catalog/{published.public_id}/"))

    def test_another_orgs_draft_is_404(self, bob, listing):
        assert client_for(bob).get(f"/market/catalog/{listing.public_id}/").status_code == 404
        assert client_for(bob).get(f"/market/catalog/{listing.public_id}/croissant.json").status_code == 404

    def test_quote_fragment_for_htmx(self, bob, alice, published):
        offer = catalog.offer_create(
            actor=alice,
            listing=published,
            name="Metered",
            terms=terms_doc(),
            price={"model": "metered", "unit_price": "3.00"},
        )
        response = client_for(bob).get(
            f"/market/catalog/offers/{offer.public_id}/quote/", {"tokens": 2_000_000}, HTTP_HX_REQUEST="true"
        )
        assert response.status_code == 200
        assert "<html" not in html(response) and "€6.00" in html(response)
        assert "minor units" not in html(response)
        too_many = client_for(bob).get(
            f"/market/catalog/offers/{offer.public_id}/quote/", {"tokens": 10**10}, HTTP_HX_REQUEST="true"
        )
        assert "caps platform tokens" in html(too_many)


class TestProviderPages:
    def test_draft_a_listing_from_a_sealed_version(self, acme_member, sealed_rows):
        version = sealed_rows()
        response = client_for(acme_member).post(
            "/market/listings/",
            {"version": version.pk, "title": "From the page", "currency": "EUR", "domain_tags": "a, b"},
        )
        assert response.status_code == 302
        listing = version.listings.get()
        assert listing.domain_tags == ["a", "b"] and listing.state == ListingState.DRAFT

    def test_offer_editor_renders_plain_words_before_saving(self, alice, listing):
        client = client_for(alice)
        response = client.post(
            f"/market/listings/{listing.public_id}/offers/new/", {**OFFER_FORM, "check": "1"}
        )
        assert response.status_code == 200
        assert "LoRA fine-tuning" in html(response)
        assert not Offer.objects.exists()
        response = client.post(
            f"/market/listings/{listing.public_id}/offers/new/", {**OFFER_FORM, "save": "1"}
        )
        assert response.status_code == 302
        row = OfferTerms.objects.get()
        assert (row.price_model, row.unit_price) == ("metered", 150)
        assert row.terms["permission"]["job_templates"] == ["causal_lm_lora"]

    def test_offer_editor_shows_the_versions_cap_error_beside_the_field(self, alice, sealed_rows):
        listing = catalog.listing_create(actor=alice, version=sealed_rows(epsilon_cap="1"), title="Capped")
        response = client_for(alice).post(
            f"/market/listings/{listing.public_id}/offers/new/",
            {**OFFER_FORM, "dp_required": "on", "epsilon_cap": "2", "save": "1"},
        )
        assert response.status_code == 200
        assert "At most 1" in html(response)
        assert not Offer.objects.exists()

    def test_negative_price_is_a_form_error(self, alice, listing):
        response = client_for(alice).post(
            f"/market/listings/{listing.public_id}/offers/new/",
            {**OFFER_FORM, "unit_price": "-3", "save": "1"},
        )
        assert response.status_code == 200
        assert "An amount cannot be negative." in html(response)

    @pytest.mark.parametrize(
        ("price", "message"),
        [
            ("1.505", "EUR has 2 decimal places"),
            ("1e3", "no grouping or exponent"),
            ("1,50", "no grouping or exponent"),
        ],
    )
    def test_a_price_not_exact_in_the_currency_is_a_form_error(self, alice, listing, price, message):
        response = client_for(alice).post(
            f"/market/listings/{listing.public_id}/offers/new/",
            {**OFFER_FORM, "unit_price": price, "save": "1"},
        )
        assert response.status_code == 200
        assert message in html(response)
        assert not Offer.objects.exists()

    def test_the_offer_editor_shows_the_current_price_in_major_units(self, alice, listing):
        client = client_for(alice)
        client.post(f"/market/listings/{listing.public_id}/offers/new/", {**OFFER_FORM, "save": "1"})
        offer = Offer.objects.get()
        page = html(client.get(f"/market/offers/{offer.public_id}/", follow=True))
        assert 'value="1.50"' in page and "Price (EUR)" in page
        edit_page = html(client.get(f"/market/listings/{listing.public_id}/", follow=True))
        assert "€1.50" in edit_page and "minor units" not in edit_page

    def test_publish_and_withdraw(self, alice, listing, offer):
        client = client_for(alice)
        assert client.post(f"/market/listings/{listing.public_id}/publish/").status_code == 302
        listing.refresh_from_db()
        assert listing.state == ListingState.PUBLISHED
        client.post(f"/market/listings/{listing.public_id}/withdraw/", {"reason": "retired corpus"})
        listing.refresh_from_db()
        assert listing.state == ListingState.WITHDRAWN and listing.withdraw_reason == "retired corpus"
        page = html(client.get(f"/market/listings/{listing.public_id}/"))
        assert "A withdrawn listing no longer changes" in page

    def test_rights_page_proposes_shares(self, alice, acme, listing):
        client = client_for(alice)
        assert "10000 bps" in html(client.get(f"/market/listings/{listing.public_id}/rights/"))
        response = client.post(f"/market/listings/{listing.public_id}/rights/", {f"share_{acme.pk}": "10000"})
        assert response.status_code == 302
        assert listing.version.allocations.filter(state="in_force").get().number == 2


class TestRightsApproval:
    def test_a_contributors_admin_approves_on_the_pending_page(self, alice, acme, sealed_rows):
        from marketplace.services import rights
        from tests.factories import OrganisationFactory
        from tests.marketplace.catalog.conftest import member

        partner = cast(Organisation, OrganisationFactory(name="Partner Texts", is_provider=True))
        version = sealed_rows(tokens={acme: 3, partner: 1})
        proposal = rights.allocation_propose(
            actor=alice, version=version, shares={acme.pk: 5000, partner.pk: 5000}
        )
        viewer = client_for(member(partner, "pia", "viewer"))
        page = html(viewer.get("/market/rights/"))
        assert "allocation v2" in page and "An admin of Partner Texts approves" in page
        assert viewer.post(f"/market/rights/{proposal.public_id}/approve/").status_code == 403
        admin = client_for(member(partner, "pat", "admin"))
        assert admin.post(f"/market/rights/{proposal.public_id}/approve/").status_code == 302
        proposal.refresh_from_db()
        assert proposal.state == "in_force"
        assert "Nothing waits for your approval" in html(admin.get("/market/rights/"))
