"""The catalog list carries each listing's active offers with their price model and price.

(Its query count stays flat with the offers: ``tests/marketplace/orders/test_list_queries.py``.)
"""

from __future__ import annotations

import pytest
from drf_spectacular.generators import SchemaGenerator
from rest_framework.test import APIClient

from marketplace.services import catalog
from tests.marketplace.catalog.conftest import terms_doc

URL = "/api/v1/catalog/listings"


@pytest.fixture
def trainer(bob, bolt, token_for) -> APIClient:
    return token_for(bob, bolt, ["read", "order"])


@pytest.fixture
def provider(alice, acme, token_for) -> APIClient:
    return token_for(alice, acme, ["read", "provide"])


class TestCatalogListOffers:
    def test_each_result_lists_its_active_offers_with_price(self, alice, trainer, published, offer):
        catalog.offer_create(
            actor=alice,
            listing=published,
            name="Metered",
            terms=terms_doc(),
            price={"model": "metered", "unit_price": "0.03"},
        )
        retired = catalog.offer_create(
            actor=alice,
            listing=published,
            name="Old",
            terms=terms_doc(),
            price={"model": "fixed", "unit_price": "100.00"},
        )
        catalog.offer_retire(actor=alice, offer=retired)

        response = trainer.get(URL)

        assert response.status_code == 200, response.content
        (result,) = response.json()["results"]
        assert [o["name"] for o in result["offers"]] == ["Research", "Metered"]  # not the retired one
        by_name = {o["name"]: o for o in result["offers"]}
        assert by_name["Research"]["current"]["price"]["model"] == "fixed"
        assert by_name["Metered"]["current"]["price"]["model"] == "metered"
        # The same offers and prices as the listing's own page, so a trainer can quote or order from the list.
        detail = trainer.get(f"{URL}/{result['id']}").json()
        assert [o["current"]["price"] for o in result["offers"]] == [
            o["current"]["price"] for o in detail["offers"]
        ]
        assert [o["id"] for o in result["offers"]] == [o["id"] for o in detail["offers"]]

    def test_the_providers_own_list_carries_offers_too(self, provider, published, offer):
        (mine,) = provider.get(URL, {"mine": "true"}).json()["results"]
        assert [o["name"] for o in mine["offers"]] == ["Research"]

    def test_the_schema_describes_the_offers_of_a_result(self):
        schema = SchemaGenerator().get_schema(request=None, public=True)
        summary = schema["components"]["schemas"]["ListingSummary"]["properties"]["offers"]
        assert summary["type"] == "array"
        assert summary["items"]["$ref"].endswith("/Offer")
