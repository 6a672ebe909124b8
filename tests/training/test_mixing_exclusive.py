"""The exclusive-use term end to end (issue 17 item 3): terms, orders, grants, mixed jobs, listing.

An offer whose terms say ``constraint.exclusive_use`` sells the only license on its dataset
version: no other license on the version (by any offer) is sold while it is live or its order
waits, it is not sold beside a live license, and its data is trained on alone (a mixed job
naming it is refused with a pointer at the term). Through the API and the database.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from django.test import Client

from common.models import Organisation, User
from marketplace.models import License, Offer
from marketplace.services import catalog
from marketplace.services.funding import topup_record
from marketplace.services.settlement import license_refund
from marketplace.terms import terms_plain
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.grants import grant_for_test
from tests.marketplace.catalog.conftest import sealed_rows, terms_doc  # noqa: F401
from tests.training.conftest import TINY_HP
from tests.training.test_submit import URL, assert_problem
from training.models import TrainingJob

EXCLUSIVE = {"max_jobs": 3, "max_epochs": 2, "max_tokens": 5_000_000, "term_days": 90}


@pytest.fixture
def dora(db) -> User:
    """An admin of Dune Labs, a second trainer."""
    dune = OrganisationFactory(name="Dune Labs", is_trainer=True)
    user = UserFactory(username="dora")
    MembershipFactory(user=user, organisation=dune, role="admin")
    return cast(User, user)


@pytest.fixture
def dune(dora) -> Organisation:
    return cast(Organisation, dora.memberships.get().organisation)


@pytest.fixture
def offers(alice, acme, bolt, dune, ops, sealed_rows) -> dict[str, Offer]:  # noqa: F811
    """One published listing with two offers: exclusive use (one license) and an ordinary one."""
    version = sealed_rows(tokens={acme: 3000})
    listing = catalog.listing_create(actor=alice, version=version, title="Tickets")
    exclusive = terms_doc(constraint={**EXCLUSIVE, "max_licenses": 1, "exclusive_use": True})
    made = {
        "exclusive": catalog.offer_create(
            actor=alice,
            listing=listing,
            name="Exclusive",
            terms=exclusive,
            price={"model": "fixed", "unit_price": "900.00"},
        ),
        "ordinary": catalog.offer_create(
            actor=alice,
            listing=listing,
            name="Research",
            terms=terms_doc(),
            price={"model": "fixed", "unit_price": "100.00"},
        ),
    }
    catalog.listing_publish(actor=alice, listing=listing)
    for organisation in (bolt, dune):
        topup_record(
            organisation=organisation,
            amount=500_000,
            currency="EUR",
            external_ref=f"bank-{organisation.pk}",
            actor=ops,
        )
    return made


def place(client, offer: Offer, key: str):
    return client.post(
        "/api/v1/orders", {"offer_id": offer.public_id}, format="json", HTTP_IDEMPOTENCY_KEY=key
    )


@pytest.fixture
def bolt_api(token_for, bob, bolt):
    return token_for(bob, bolt, ["read", "order", "train"])


@pytest.fixture
def dune_api(token_for, dora, dune):
    return token_for(dora, dune, ["read", "order"])


class TestTerms:
    @pytest.mark.parametrize("max_licenses", [None, 2])
    def test_exclusive_use_needs_an_offer_of_one_license_with_a_pointer(
        self,
        token_for,
        alice,
        acme,
        sealed_rows,  # noqa: F811
        max_licenses,
    ):
        listing = catalog.listing_create(actor=alice, version=sealed_rows(tokens={acme: 10}), title="Tickets")
        doc = terms_doc(constraint={**EXCLUSIVE, "max_licenses": max_licenses, "exclusive_use": True})
        body = {"name": "Exclusive", "terms": doc, "price": {"model": "fixed", "unit_price": "1.00"}}
        response = token_for(alice, acme, ["read", "provide"]).post(
            f"/api/v1/catalog/listings/{listing.public_id}/offers", body, format="json"
        )
        problem = assert_problem(response, 422, "marketplace.exclusive_use_needs_one_license")
        assert [e["pointer"] for e in problem["errors"]] == ["/terms/constraint/max_licenses"]
        assert not Offer.objects.filter(listing=listing).exists()

    def test_the_term_is_stored_explicitly_and_said_in_plain_words(self, offers):
        ordinary = catalog.offer_terms_current(offers["ordinary"]).terms
        exclusive = catalog.offer_terms_current(offers["exclusive"]).terms
        assert ordinary["constraint"]["exclusive_use"] is False and exclusive["constraint"]["exclusive_use"]
        said = " ".join(terms_plain(exclusive))
        assert (
            "Exclusive use: while this license is active no one else is licensed this dataset version" in said
        )
        assert "trained on alone" in said and "at most 1 license on this offer" not in said
        assert "Exclusive use" not in " ".join(terms_plain(ordinary))

    def test_the_listing_page_shows_it(self, offers, carol):
        page = Client()
        page.force_login(carol)
        html = page.get(f"/market/catalog/{offers['exclusive'].listing.public_id}/").content.decode()
        assert (
            "Exclusive use: while this license is active no one else is licensed this dataset version" in html
        )


class TestOfferForm:
    def test_the_provider_sets_exclusive_use_in_the_portal_with_the_error_beside_its_field(
        self,
        alice,
        acme,
        sealed_rows,  # noqa: F811
    ):
        from tests.marketplace.catalog.test_pages import OFFER_FORM

        listing = catalog.listing_create(actor=alice, version=sealed_rows(tokens={acme: 10}), title="Tickets")
        page = Client()
        page.force_login(alice)
        url = f"/market/listings/{listing.public_id}/offers/new/"
        refused = page.post(url, {**OFFER_FORM, "exclusive_use": "on", "save": "1"})
        assert refused.status_code == 200
        assert refused.context["form"].errors == {
            "max_licenses": ["Must be 1 when constraint.exclusive_use is true."]
        }
        assert not Offer.objects.exists()
        saved = page.post(url, {**OFFER_FORM, "exclusive_use": "on", "max_licenses": "1", "save": "1"})
        assert saved.status_code == 302
        constraint = catalog.offer_terms_current(Offer.objects.get()).terms["constraint"]
        assert constraint["exclusive_use"] is True and constraint["max_licenses"] == 1


class TestOrders:
    def test_an_exclusive_license_refuses_every_other_license_on_its_version_until_it_ends(
        self, offers, bolt_api, dune_api
    ):
        assert place(bolt_api, offers["exclusive"], "excl-0001").status_code == 201
        held = License.objects.select_related("grant").get(order__offer=offers["exclusive"])
        assert held.grant.terms["exclusive_use"] is True
        problem = assert_problem(
            place(dune_api, offers["ordinary"], "ord-0001"), 409, "marketplace.version_exclusive"
        )
        assert problem["errors"][0]["pointer"] == "/offer"
        assert offers["exclusive"].listing.version.public_id in problem["detail"]
        assert License.objects.count() == 1
        # Once the exclusive license has ended, the version is licensed to others again.
        license_refund(license_=held, reason="ended by the platform")
        assert place(dune_api, offers["ordinary"], "ord-0002").status_code == 201

    def test_an_exclusive_offer_is_not_sold_beside_a_live_license(self, offers, bolt_api, dune_api):
        assert place(dune_api, offers["ordinary"], "ord-0003").status_code == 201
        problem = assert_problem(
            place(bolt_api, offers["exclusive"], "excl-0002"), 409, "marketplace.version_licensed"
        )
        assert problem["errors"][0]["pointer"] == "/offer"
        assert not License.objects.filter(order__offer=offers["exclusive"]).exists()

    def test_an_ordinary_license_leaves_ordinary_ones_alone(self, offers, bolt_api, dune_api):
        """Negative control: without the term, two licenses on one version are sold."""
        assert place(bolt_api, offers["ordinary"], "ord-0004").status_code == 201
        assert place(dune_api, offers["ordinary"], "ord-0005").status_code == 201


class TestMixing:
    def _body(self, grants: list[Any], tiny) -> dict[str, Any]:
        return {
            "licenses": [
                {"license": g.external_ref, "weight": w} for g, w in zip(grants, ["0.6", "0.4"], strict=True)
            ],
            "template": "causal_lm_lora",
            "base": tiny.public_id,
            "hyperparameters": dict(TINY_HP),
        }

    def test_an_exclusive_license_is_trained_on_alone(self, offers, bolt_api, bolt, acme, sealed_rows, tiny):  # noqa: F811
        assert place(bolt_api, offers["exclusive"], "excl-0003").status_code == 201
        exclusive = License.objects.select_related("grant").get(order__offer=offers["exclusive"]).grant
        other = grant_for_test(
            sealed_rows(tokens={acme: 2000}),
            bolt,
            **{**exclusive.terms, "exclusive_use": False},
        )
        problem = assert_problem(
            bolt_api.post(URL, self._body([exclusive, other], tiny), format="json"),
            422,
            "training.licenses_incompatible",
        )
        assert [(e["pointer"], e["license"], e["code"]) for e in problem["errors"]] == [
            ("/licenses/0/terms/exclusive_use", exclusive.external_ref, "exclusive")
        ]
        assert not TrainingJob.objects.exists()
