"""Rights allocations and terms rows by public id (issue 13, item 9): ``alc_…`` and ``trm_…``.

An allocation's integer key counted allocations platform-wide; its approve and
reject routes (API and portal) now take only ``alc_`` ids, an old integer
route matches nothing, and an allocation the caller may not see answers as an
unknown one does.
"""

from __future__ import annotations

import pytest
from django.test import Client

from common.public_ids import is_public_id
from marketplace.models import AllocationState, RightsAllocation
from marketplace.services.rights import allocation_propose
from tests.factories import OrganisationFactory
from tests.marketplace.catalog.conftest import member

UNKNOWN = "alc_0000000000000000"


@pytest.fixture
def partner(db):
    return OrganisationFactory(name="Partner Texts", is_provider=True)


@pytest.fixture
def proposal(alice, acme, partner, sealed_rows) -> RightsAllocation:
    version = sealed_rows(tokens={acme: 2_000, partner: 1_000})
    return allocation_propose(actor=alice, version=version, shares={acme.pk: 5000, partner.pk: 5000})


@pytest.fixture
def partner_admin(partner, token_for):
    return token_for(member(partner, "pat", "admin"), partner, ["read", "provide"])


def approve_path(allocation_id: object) -> str:
    return f"/api/v1/catalog/rights/{allocation_id}/approve"


class TestAllocationIds:
    def test_a_holder_approves_by_alc_id(self, proposal, partner_admin):
        response = partner_admin.post(approve_path(proposal.public_id))
        assert response.status_code == 200, response.content
        assert response.json()["id"] == proposal.public_id and is_public_id(proposal.public_id, "alc")
        assert RightsAllocation.objects.get(pk=proposal.pk).state == AllocationState.IN_FORCE

    def test_the_integer_route_no_longer_answers(self, proposal, partner_admin):
        for path in (approve_path(proposal.pk), f"/api/v1/catalog/rights/{proposal.pk}/reject"):
            response = partner_admin.post(path)
            assert response.status_code == 404
            assert response["Content-Type"] == "application/problem+json"
            assert response.json()["code"] == "not_found" and path in response.json()["detail"]
        assert RightsAllocation.objects.get(pk=proposal.pk).state == AllocationState.PROPOSED

    def test_an_allocation_of_another_organisation_answers_as_an_unknown_one(
        self, proposal, bob, bolt, token_for, partner_admin
    ):
        outsider = token_for(bob, bolt, ["read", "provide"])
        theirs = outsider.post(approve_path(proposal.public_id))
        unknown = partner_admin.post(approve_path(UNKNOWN))
        assert theirs.status_code == unknown.status_code == 404
        assert theirs.json() == unknown.json()
        assert RightsAllocation.objects.get(pk=proposal.pk).state == AllocationState.PROPOSED

    def test_the_listing_history_and_terms_show_public_ids(self, alice, acme, token_for, sealed_rows):
        from marketplace.services import catalog
        from tests.marketplace.catalog.conftest import terms_doc

        listing = catalog.listing_create(actor=alice, version=sealed_rows(), title="Tickets")
        offer = catalog.offer_create(
            actor=alice,
            listing=listing,
            name="Research",
            terms=terms_doc(),
            price={"model": "fixed", "unit_price": "5.00"},
        )
        client = token_for(alice, acme, ["read", "provide"])
        history = client.get(f"/api/v1/catalog/listings/{listing.public_id}/rights").json()
        assert [is_public_id(a["id"], "alc") for a in history["allocations"]] == [True]
        current = client.get(f"/api/v1/catalog/offers/{offer.public_id}").json()["current"]
        assert is_public_id(current["id"], "trm")


class TestPendingPage:
    def test_the_forms_post_to_the_alc_id_and_the_integer_url_is_gone(self, proposal, partner):
        admin = Client()
        admin.force_login(member(partner, "pia", "admin"))
        page = admin.get("/market/rights/").content.decode()
        assert f'action="/market/rights/{proposal.public_id}/approve/"' in page
        assert admin.post(f"/market/rights/{proposal.pk}/approve/").status_code == 404
        assert RightsAllocation.objects.get(pk=proposal.pk).state == AllocationState.PROPOSED
        assert admin.post(f"/market/rights/{proposal.public_id}/approve/").status_code == 302
        assert RightsAllocation.objects.get(pk=proposal.pk).state == AllocationState.IN_FORCE
