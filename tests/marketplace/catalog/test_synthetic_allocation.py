"""A manual allocation for a model-generated version (issue 17 item 2): its owner may name the
parties of its default allocation -- the source version's rights holders and the model's trainer --
besides its own contributors, and nobody else. Each named source holder approves before the
proposal comes in force, and a sale split by it pays each exactly."""

from __future__ import annotations

from typing import Any, cast

import pytest
from django.test import Client
from django.utils import timezone

from common.models import Organisation, User
from custody.models import (
    Contribution,
    ContributionState,
    Dataset,
    DatasetVersion,
    Shard,
    VersionContributor,
    VersionState,
)
from marketplace.exceptions import AllocationInvalid
from marketplace.ledger import balance, payable_account
from marketplace.models import AllocationState, License, RightsAllocation
from marketplace.services import catalog
from marketplace.services.funding import topup_record
from marketplace.services.orders import order_place
from marketplace.services.rights import (
    allocation_approve,
    allocation_in_force,
    allocation_parties,
    allocation_propose,
    allocation_propose_by_value,
    allocation_shares,
)
from marketplace.services.settlement import usage_settle
from tests.factories import OrganisationFactory
from tests.marketplace.catalog.conftest import member, terms_doc
from tests.marketplace.orders.conftest import use

PRICE = {"model": "fixed", "unit_price": "500.00"}  # 50,000 minor units


@pytest.fixture(autouse=True)
def _fee(settings):
    settings.MARKETPLACE_FEE_BPS = 1000


@pytest.fixture
def partner(db) -> Organisation:
    return cast(Organisation, OrganisationFactory(name="Partner Texts", is_provider=True))


@pytest.fixture
def gen(db) -> Organisation:
    """The trainer whose custody model generated the synthetic version (a provider too: it sells it)."""
    return cast(Organisation, OrganisationFactory(name="Gen Models", is_provider=True, is_trainer=True))


@pytest.fixture
def gina(gen) -> User:
    return member(gen, "gina", "admin")


@pytest.fixture
def stranger(db) -> Organisation:
    return cast(Organisation, OrganisationFactory(name="Stranger Texts", is_provider=True))


@pytest.fixture
def source(acme, partner, sealed_rows) -> DatasetVersion:
    """Acme contributed 2,000 platform tokens and Partner 1,000: 6,667 / 3,333 bps in force."""
    return sealed_rows(tokens={acme: 2_000, partner: 1_000})


@pytest.fixture
def synthetic(gen, source) -> DatasetVersion:
    """A sealed model-generated version of Gen's, made from a model trained on ``source``."""
    dataset = Dataset.objects.create(owner=gen, name="Synthetic tickets", slug="synthetic-tickets")
    version = DatasetVersion.objects.create(
        dataset=dataset,
        number=1,
        state=VersionState.SEALED,
        merkle_root="cd" * 32,
        sealed_at=timezone.now(),
        records=10,
        tokens=800,
        provenance={"model_generated": True, "source_version": source.public_id, "model_share_bps": 3000},
    )
    VersionContributor.objects.create(version=version, organisation=gen)
    contribution = Contribution.objects.create(
        version=version,
        contributor=gen,
        filename="generated.jsonl",
        format="jsonl",
        state=ContributionState.DONE,
        records=10,
        tokens=800,
    )
    Shard.objects.create(
        version=version,
        index=0,
        contribution=contribution,
        first_record=0,
        records=10,
        tokens=800,
        size=1,
        sha256="0" * 64,
        blob_key="none/0",
    )
    return version


def owed(org: Organisation) -> int:
    return balance(payable_account(organisation=org, currency="EUR"))


class TestSyntheticAllocationService:
    def test_the_parties_are_the_contributor_and_the_source_holders(
        self, acme, partner, gen, source, synthetic
    ):
        assert allocation_parties(version=synthetic) == {gen.pk, acme.pk, partner.pk}
        assert allocation_parties(version=source) == {acme.pk, partner.pk}  # an uploaded version: as before

    def test_a_proposal_naming_the_source_holders_comes_in_force_after_they_approve(
        self, alice, acme, partner, gen, gina, synthetic
    ):
        shares = {gen.public_id: 4_000, acme.public_id: 4_000, partner.public_id: 2_000}
        proposal = allocation_propose(actor=gina, version=synthetic, shares=shares)
        assert proposal.state == AllocationState.PROPOSED
        assert allocation_approve(actor=alice, allocation=proposal, organisation=acme).state == (
            AllocationState.PROPOSED
        )
        pat = member(partner, "pat", "admin")
        assert allocation_approve(actor=pat, allocation=proposal, organisation=partner).state == (
            AllocationState.IN_FORCE
        )
        in_force = allocation_in_force(version=synthetic)
        assert in_force.pk == proposal.pk
        assert allocation_shares(in_force) == {gen.pk: 4_000, acme.pk: 4_000, partner.pk: 2_000}

    def test_a_sale_pays_the_named_source_holders_exactly(
        self, alice, acme, partner, gen, gina, bolt, bob, ops, synthetic
    ):
        proposal = allocation_propose(
            actor=gina,
            version=synthetic,
            shares={gen.pk: 3_500, acme.pk: 4_500, partner.pk: 2_000},
        )
        allocation_approve(actor=alice, allocation=proposal, organisation=acme)
        allocation_approve(actor=member(partner, "pat", "admin"), allocation=proposal, organisation=partner)
        listing = catalog.listing_create(actor=gina, version=synthetic, title="Synthetic tickets")
        offer = catalog.offer_create(
            actor=gina, listing=listing, name="Research", terms=terms_doc(), price=PRICE
        )
        catalog.listing_publish(actor=gina, listing=listing)
        topup_record(organisation=bolt, amount=50_000, currency="EUR", external_ref="bank-1", actor=ops)
        order = order_place(buyer=bolt, offer=offer, actor=bob)
        assert order.shares == {gen.pk: 3_500, acme.pk: 4_500, partner.pk: 2_000}
        usage_settle(usage_id=use(License.objects.get(order=order), "job-1", "job_started", 1).pk)
        # 50,000 less the 10% fee is 45,000: 35%, 45% and 20% of it, to the minor unit.
        paid = {org.name: owed(org) for org in (gen, acme, partner)}
        assert paid == {"Gen Models": 15_750, "Acme Corpora": 20_250, "Partner Texts": 9_000}

    @pytest.mark.parametrize("who", ["stranger", "bolt"])
    def test_a_proposal_naming_an_unrelated_organisation_is_refused_with_a_pointer(
        self, request, acme, partner, gen, gina, synthetic, who
    ):
        outsider: Organisation = request.getfixturevalue(who)
        shares = {gen.pk: 4_000, acme.pk: 3_000, partner.pk: 2_000, outsider.pk: 1_000}
        with pytest.raises(AllocationInvalid) as caught:
            allocation_propose(actor=gina, version=synthetic, shares=shares)
        assert caught.value.code == "marketplace.allocation_holder_not_party"
        assert caught.value.errors == [
            {
                "pointer": f"/shares/{outsider.pk}",
                "code": "not_party",
                "detail": "Not a contributor, a rights holder of the source version, or the model's trainer.",
            }
        ]
        assert not RightsAllocation.objects.filter(state=AllocationState.PROPOSED).exists()

    def test_a_proposal_leaving_a_source_holder_out_is_refused_on_its_share(
        self, acme, partner, gen, gina, synthetic
    ):
        # Otherwise the owner could take the source holders' shares without their approval.
        with pytest.raises(AllocationInvalid) as caught:
            allocation_propose(actor=gina, version=synthetic, shares={gen.pk: 5_000, acme.pk: 5_000})
        assert caught.value.code == "marketplace.allocation_contributor_missing"
        assert [e["pointer"] for e in caught.value.errors] == [f"/shares/{partner.public_id}"]

    def test_an_uploaded_version_still_refuses_a_non_contributor(self, alice, acme, partner, gen, source):
        # Control: the source holders' right to be named holds on the synthetic version only.
        with pytest.raises(AllocationInvalid) as caught:
            allocation_propose(
                actor=alice, version=source, shares={acme.pk: 5_000, partner.pk: 4_000, gen.pk: 1_000}
            )
        assert caught.value.code == "marketplace.allocation_holder_not_contributor"


class TestSyntheticAllocationApi:
    @pytest.fixture
    def client(self, token_for, gina, gen) -> Any:
        return token_for(gina, gen, ["read", "provide"])

    @pytest.fixture
    def path(self, gina, synthetic) -> str:
        listing = catalog.listing_create(actor=gina, version=synthetic, title="Synthetic tickets")
        return f"/api/v1/catalog/listings/{listing.public_id}/rights"

    def test_a_proposal_naming_the_source_holders_is_accepted(self, client, path, acme, partner, gen):
        shares = {gen.public_id: 4_000, acme.public_id: 4_000, partner.public_id: 2_000}
        response = client.post(path, {"shares": shares}, format="json")
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["state"] == "proposed"
        assert {s["holder_id"]: s["basis_points"] for s in body["shares"]} == shares

    def test_a_proposal_naming_an_unrelated_organisation_is_a_422_with_a_pointer(
        self, client, path, acme, partner, gen, stranger
    ):
        shares = {
            gen.public_id: 4_000,
            acme.public_id: 3_000,
            partner.public_id: 2_000,
            stranger.public_id: 1_000,
        }
        response = client.post(path, {"shares": shares}, format="json")
        assert response.status_code == 422, response.content
        assert response["Content-Type"].startswith("application/problem+json")
        body = response.json()
        assert body["code"] == "marketplace.allocation_holder_not_party"
        assert [e["pointer"] for e in body["errors"]] == [f"/shares/{stranger.public_id}"]
        assert not RightsAllocation.objects.filter(state=AllocationState.PROPOSED).exists()


class TestSyntheticAllocationPage:
    def test_the_rights_page_offers_the_source_holders_rows_and_proposes_with_them(
        self, gina, gen, acme, partner, stranger, synthetic
    ):
        listing = catalog.listing_create(actor=gina, version=synthetic, title="Synthetic tickets")
        client = Client()
        client.force_login(gina)
        path = f"/market/listings/{listing.public_id}/rights/"
        page = client.get(path).content.decode()
        for org in (gen, acme, partner):
            assert f'name="share_{org.pk}"' in page and f"{org.name} (basis points)" in page
        assert f'name="share_{stranger.pk}"' not in page
        shares = {gen.pk: 4_000, acme.pk: 4_000, partner.pk: 2_000}
        response = client.post(path, {f"share_{org}": bps for org, bps in shares.items()})
        assert response.status_code == 302, response.content.decode()[:2000]
        proposal = RightsAllocation.objects.get(version=synthetic, state=AllocationState.PROPOSED)
        assert allocation_shares(proposal) == shares


def test_shares_by_value_are_refused_for_a_synthetic_version_with_a_pointer(gina, synthetic):
    # A valuation weighs the version's own contributions; the source holders contributed none.
    with pytest.raises(AllocationInvalid) as caught:
        allocation_propose_by_value(actor=gina, version=synthetic)
    assert caught.value.code == "marketplace.allocation_synthetic"
    assert [e["pointer"] for e in caught.value.errors] == ["/basis"]
