"""The catalog API through the client: statuses, bodies, and problem+json for bad input."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from marketplace.models import Listing, Offer, OfferTerms
from marketplace.services import catalog
from tests.common.test_problems import assert_problem
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.marketplace.catalog.conftest import terms_doc


@pytest.fixture
def provider(alice, acme, token_for) -> APIClient:
    return token_for(alice, acme, ["read", "provide"])


@pytest.fixture
def trainer(bob, bolt, token_for) -> APIClient:
    return token_for(bob, bolt, ["read", "order"])


def offer_body(**overrides):
    return {
        "name": "Research",
        "terms": terms_doc(),
        "price": {"model": "fixed", "unit_price": "250.00"},
        **overrides,
    }


class TestProviderFlow:
    def test_create_offer_publish_and_trainer_sees_it(self, provider, trainer, sealed_rows):
        version = sealed_rows()
        response = provider.post(
            "/api/v1/catalog/listings",
            {"version_id": version.public_id, "title": "Support tickets", "domain_tags": ["support"]},
            format="json",
        )
        assert response.status_code == 201, response.content
        listing_id = response.json()["id"]
        assert response.json()["statistics"]["platform_tokens"] == 1000
        assert trainer.get(f"/api/v1/catalog/listings/{listing_id}").status_code == 404  # a draft
        response = provider.post(f"/api/v1/catalog/listings/{listing_id}/offers", offer_body(), format="json")
        assert response.status_code == 201, response.content
        offer = response.json()
        assert offer["current"]["number"] == 1
        assert any("non-commercial research" in line for line in offer["current"]["plain"])
        assert provider.post(f"/api/v1/catalog/listings/{listing_id}/publish").status_code == 200
        body = trainer.get(f"/api/v1/catalog/listings/{listing_id}").json()
        assert body["state"] == "published"
        assert [o["id"] for o in body["offers"]] == [offer["id"]]
        assert body["rights_holders"][0]["basis_points"] == 10_000
        assert body["preview"] == []
        found = trainer.get("/api/v1/catalog/listings", {"q": "tickets"}).json()
        assert [r["id"] for r in found["results"]] == [listing_id]
        assert trainer.get("/api/v1/catalog/listings", {"mine": "true"}).json()["results"] == []
        mine = provider.get("/api/v1/catalog/listings", {"mine": "true"}).json()["results"]
        assert [(r["id"], r["state"]) for r in mine] == [(listing_id, "published")]

    def test_new_terms_make_a_new_version(self, provider, offer):
        response = provider.post(
            f"/api/v1/catalog/offers/{offer.public_id}/terms",
            {"terms": terms_doc(), "price": {"model": "period", "unit_price": "9.00", "period_days": 30}},
            format="json",
        )
        assert response.status_code == 201, response.content
        assert response.json()["number"] == 2
        versions = provider.get(f"/api/v1/catalog/offers/{offer.public_id}").json()["versions"]
        assert [v["number"] for v in versions] == [2, 1]
        # Prices come back as they went in (major units), with minor units and the currency beside.
        assert versions[0]["price"] == {
            "model": "period",
            "unit_price": "9.00",
            "unit_price_minor": 900,
            "currency": "EUR",
            "period_days": 30,
        }

    def test_propose_rights_for_a_sole_provider(self, provider, acme, listing):
        response = provider.post(
            f"/api/v1/catalog/listings/{listing.public_id}/rights",
            {"shares": {acme.public_id: 10_000}},
            format="json",
        )
        assert response.status_code == 201, response.content
        assert response.json()["state"] == "in_force"
        history = provider.get(f"/api/v1/catalog/listings/{listing.public_id}/rights").json()
        assert [a["number"] for a in history["allocations"]] == [2, 1]


class TestProblems:
    def test_unknown_terms_field_names_its_pointer(self, provider, listing):
        doc = terms_doc()
        doc["constraint"]["max_resales"] = 3
        response = provider.post(
            f"/api/v1/catalog/listings/{listing.public_id}/offers", offer_body(terms=doc), format="json"
        )
        body = assert_problem(response, 422, "marketplace.terms_unknown_field")
        assert body["errors"][0]["pointer"] == "/terms/constraint/max_resales"
        assert not Offer.objects.exists()

    @pytest.mark.parametrize(
        ("price", "pointer"),
        [
            ({"model": "fixed", "unit_price": "-1.00"}, "/price/unit_price"),
            ({"model": "fixed", "unit_price": "lots"}, "/price/unit_price"),
            ({"model": "fixed", "unit_price": "150.001"}, "/price/unit_price"),
            ({"model": "fixed", "unit_price": 15000}, "/price/unit_price"),
            ({"model": "metered"}, "/price/unit_price"),
            ({"model": "period", "unit_price": "5.00"}, "/price/period_days"),
        ],
    )
    def test_bad_price_is_422_with_a_stable_code(self, provider, listing, price, pointer):
        response = provider.post(
            f"/api/v1/catalog/listings/{listing.public_id}/offers", offer_body(price=price), format="json"
        )
        body = assert_problem(response, 422, "marketplace.price_invalid")
        assert body["errors"][0]["pointer"] == pointer
        assert not OfferTerms.objects.exists()

    def test_listing_an_unsealed_version_is_a_conflict(self, provider, version):
        response = provider.post(
            "/api/v1/catalog/listings", {"version_id": version.public_id, "title": "Early"}, format="json"
        )
        assert_problem(response, 409, "marketplace.version_not_sealed")

    def test_epsilon_above_cap(self, provider, alice, sealed_rows):
        listing = catalog.listing_create(actor=alice, version=sealed_rows(epsilon_cap="1"), title="Capped")
        doc = terms_doc(duty={"differential_privacy": {"required": True, "epsilon_cap": 1.5}})
        response = provider.post(
            f"/api/v1/catalog/listings/{listing.public_id}/offers", offer_body(terms=doc), format="json"
        )
        body = assert_problem(response, 422, "marketplace.epsilon_above_cap")
        assert body["errors"][0]["pointer"] == "/terms/duty/differential_privacy/epsilon_cap"

    def test_editing_a_withdrawn_listing(self, provider, alice, published):
        catalog.listing_withdraw(actor=alice, listing=published)
        response = provider.patch(
            f"/api/v1/catalog/listings/{published.public_id}", {"title": "Back"}, format="json"
        )
        assert_problem(response, 409, "marketplace.listing_withdrawn")

    def test_unknown_listing_field(self, provider, listing):
        response = provider.patch(
            f"/api/v1/catalog/listings/{listing.public_id}", {"colour": "red"}, format="json"
        )
        body = assert_problem(response, 422, "marketplace.listing_invalid")
        assert body["errors"][0]["pointer"] == "/colour"

    def test_another_orgs_draft_is_404(self, trainer, listing):
        assert_problem(
            trainer.get(f"/api/v1/catalog/listings/{listing.public_id}"), 404, "marketplace.listing_not_found"
        )
        assert_problem(
            trainer.get(f"/api/v1/catalog/listings/{listing.public_id}/croissant"),
            404,
            "marketplace.listing_not_found",
        )

    def test_a_viewer_may_not_edit(self, acme_viewer, listing):
        client = APIClient()
        client.force_login(acme_viewer)
        response = client.patch(
            f"/api/v1/catalog/listings/{listing.public_id}", {"title": "Mine"}, format="json"
        )
        assert_problem(response, 403, "common.role_insufficient")

    def test_another_provider_cannot_edit_a_published_listing(self, published, token_for):
        other = OrganisationFactory(name="Other Provider", is_provider=True)
        olga = UserFactory(username="olga")
        MembershipFactory(user=olga, organisation=other, role="admin")
        client = token_for(olga, other, ["read", "provide"])
        assert client.get(f"/api/v1/catalog/listings/{published.public_id}").status_code == 200
        assert_problem(
            client.patch(f"/api/v1/catalog/listings/{published.public_id}", {"title": "Mine"}, format="json"),
            404,
            "marketplace.listing_not_found",
        )
        assert Listing.objects.get(pk=published.pk).title == "Support tickets"


class TestQuote:
    def test_quotes_a_metered_offer(self, alice, trainer, published):
        offer = catalog.offer_create(
            actor=alice,
            listing=published,
            name="Metered",
            terms=terms_doc(),
            price={"model": "metered", "unit_price": "20.00"},
        )
        response = trainer.get(f"/api/v1/catalog/offers/{offer.public_id}/quote", {"tokens": 2_500_000})
        assert response.status_code == 200, response.content
        body = response.json()
        assert (body["amount"], body["escrow"], body["currency"]) == ("50.00", "100.00", "EUR")
        assert (body["amount_minor"], body["escrow_minor"]) == (5000, 10_000)

    def test_bad_usage_is_422(self, alice, trainer, published):
        offer = catalog.offer_create(
            actor=alice,
            listing=published,
            name="Metered",
            terms=terms_doc(),
            price={"model": "metered", "unit_price": "0.01"},
        )
        url = f"/api/v1/catalog/offers/{offer.public_id}/quote"
        assert_problem(trainer.get(url, {"tokens": "many"}), 422, "marketplace.quote_tokens_invalid")
        # A digit to str.isdigit() that int() refuses, and more digits than int() parses: field errors too.
        for tokens in ("²", "9" * 5000):
            assert_problem(trainer.get(url, {"tokens": tokens}), 422, "marketplace.quote_tokens_invalid")
        body = assert_problem(trainer.get(url, {"tokens": 10**9}), 422, "marketplace.quote_tokens_above_cap")
        assert body["errors"][0]["pointer"] == "/tokens"


class TestTermsSchema:
    def test_is_public(self, api, db):
        response = api.get("/api/v1/catalog/terms-schema")
        assert response.status_code == 200
        assert response.json()["$id"].endswith("license-terms/v1.json")


class TestSearchFilters:
    def test_filters_by_tag_language_and_price_model(self, alice, trainer, sealed_rows):
        made = []
        for title, tags, model in [
            ("Clinic notes", ["health"], "fixed"),
            ("Court rulings", ["legal"], "metered"),
        ]:
            listing = catalog.listing_create(
                actor=alice, version=sealed_rows(), title=title, domain_tags=tags
            )
            catalog.offer_create(
                actor=alice,
                listing=listing,
                name="o",
                terms=terms_doc(),
                price={"model": model, "unit_price": "0.01"},
            )
            made.append(catalog.listing_publish(actor=alice, listing=listing))

        def ids(**params):
            return [r["id"] for r in trainer.get("/api/v1/catalog/listings", params).json()["results"]]

        assert ids(tag="legal") == [made[1].public_id]
        assert ids(price_model="fixed") == [made[0].public_id]
        assert ids(language="en") == [made[1].public_id, made[0].public_id]
        assert ids(language="fr") == []
        assert ids(q="clinic") == [made[0].public_id]
        assert ids(q="rulings court") == [made[1].public_id]
        assert ids(q="nothing-like-this") == []


class TestPreviewThroughTheApi:
    def test_pick_approve_and_only_then_trainers_see_it(self, alice, provider, trainer, version, upload):
        from custody import services as custody
        from tests.custody.conftest import drain, jsonl

        upload(
            version,
            jsonl([{"text": f"Call Maria Lopez at m{i}@example.com about ticket {i}."} for i in range(4)]),
        )
        custody.version_process(actor=alice, version=version)
        drain()
        listing = catalog.listing_create(
            actor=alice, version=custody.version_seal(actor=alice, version=version), title="Tickets"
        )
        catalog.offer_create(
            actor=alice,
            listing=listing,
            name="o",
            terms=terms_doc(),
            price={"model": "fixed", "unit_price": "0.01"},
        )
        catalog.listing_publish(actor=alice, listing=listing)
        candidates = provider.get(f"/api/v1/catalog/listings/{listing.public_id}/preview-candidates").json()
        assert len(candidates) == 4 and "@example.com" not in str(candidates)
        ids = [c["record_id"] for c in candidates[:2]]
        response = provider.put(
            f"/api/v1/catalog/listings/{listing.public_id}/preview", {"record_ids": ids}, format="json"
        )
        assert response.status_code == 200 and [p["record_id"] for p in response.json()["preview"]] == ids
        assert trainer.get(f"/api/v1/catalog/listings/{listing.public_id}").json()["preview"] == []
        assert (
            provider.post(f"/api/v1/catalog/listings/{listing.public_id}/preview/approve").status_code == 200
        )
        seen = trainer.get(f"/api/v1/catalog/listings/{listing.public_id}").json()["preview"]
        assert [p["record_id"] for p in seen] == ids
        assert (
            trainer.get(f"/api/v1/catalog/listings/{listing.public_id}/preview-candidates").status_code == 404
        )

    def test_picking_a_record_that_is_not_a_candidate(self, alice, provider, sealed_rows):
        partner = OrganisationFactory(name="Partner Texts", is_provider=True)
        version = sealed_rows(tokens={partner: 10})  # none of the records is Acme's own
        listing = catalog.listing_create(actor=alice, version=version, title="Pooled")
        response = provider.put(
            f"/api/v1/catalog/listings/{listing.public_id}/preview", {"record_ids": [5]}, format="json"
        )
        body = assert_problem(response, 422, "marketplace.listing_invalid")
        assert body["errors"][0]["pointer"] == "/record_ids"


class TestQuoteOfARetiredOffer:
    def test_is_a_conflict(self, alice, trainer, published, offer):
        catalog.offer_retire(actor=alice, offer=offer)
        response = trainer.get(f"/api/v1/catalog/offers/{offer.public_id}/quote")
        assert_problem(response, 409, "marketplace.offer_retired")


class TestSearchQuery:
    """The catalog search checks its query parameters: each of these was a 500 on Postgres (proof fuzzing)."""

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ({"provider": "²"}, "provider"),  # a digit to str.isdigit, not to int()
            ({"provider": "9" * 30}, "provider"),  # past a bigint
            ({"q": "support\x00"}, "q"),  # Postgres text cannot hold NUL
            ({"tag": "\x00"}, "tag"),
            ({"language": "e\x00n"}, "language"),
            ({"price_model": "barter"}, "price_model"),
            ({"mine": "5"}, "mine"),
        ],
    )
    def test_a_bad_parameter_is_a_field_error(self, trainer, published, query, field):
        response = trainer.get("/api/v1/catalog/listings", query)
        assert response.status_code == 422, response.content
        assert response["Content-Type"] == "application/problem+json"
        assert [error["pointer"] for error in response.json()["errors"]] == [f"/{field}"]

    def test_good_parameters_still_filter(self, trainer, published):
        provider = published.version.dataset.owner.public_id
        found = trainer.get("/api/v1/catalog/listings", {"provider": provider, "mine": "false", "q": ""})
        assert [row["id"] for row in found.json()["results"]] == [published.public_id]
        other = trainer.get("/api/v1/catalog/listings", {"provider": "org_0000000000000000"})
        assert other.json()["results"] == []

    def test_the_schema_declares_the_422(self, trainer):
        schema = trainer.get("/api/v1/schema/?format=json").json()
        assert "422" in schema["paths"]["/api/v1/catalog/listings"]["get"]["responses"]
        for path in ("/api/v1/statements/earnings", "/api/v1/statements/spend"):
            assert "422" in schema["paths"][path]["get"]["responses"], path
