"""What a valuation feeds in marketplace (issue 15 item 3): value-weighted rights proposals and the
price suggestion on the listing draft.

These tests record a valuation's published aggregates with custody's own service (as the launcher
does when a job finishes); tests/training/test_valuation_feeds.py runs a real valuation job.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

import pytest
from django.test import Client

from common.models import AuditEvent
from custody.models import Contribution, DatasetVersion, ValuationSummary
from custody.services.valuation_summary import valuation_summary_record
from marketplace.exceptions import AllocationInvalid
from marketplace.ledger import split
from marketplace.models import AllocationState, RightsAllocation
from marketplace.services import catalog
from marketplace.services.price_suggestion import price_suggestion
from marketplace.services.rights import (
    allocation_approve,
    allocation_in_force,
    allocation_propose_by_value,
    allocation_shares,
    value_shares,
)
from tests.common.test_problems import assert_problem
from tests.factories import OrganisationFactory
from tests.marketplace.catalog.conftest import member, terms_doc

pytestmark = pytest.mark.django_db


def ref(name: str) -> str:
    """A valuation job's public id (job_ and 16 hex digits), stable per name."""
    return "job_" + hashlib.sha256(name.encode()).hexdigest()[:16]


def record(
    version: DatasetVersion, sums: list[float], job: str, *, total: float | None = None
) -> ValuationSummary:
    """Record aggregates shaped as the launcher publishes them, one group per contribution."""
    contributions = list(Contribution.objects.filter(version=version).order_by("pk"))
    groups = {
        f"contribution-{c.pk}": {"count": 10, "sum": s, "mean": s / 10}
        for c, s in zip(contributions, sums, strict=False)
    }
    published = {
        "groups": groups,
        "histogram": [],
        "summary": {"count": 10 * len(groups), "sum": sum(sums) if total is None else total, "mean": 0.5},
        "min_group": 10,
    }
    return valuation_summary_record(version=version, job_ref=job, published=published)


@pytest.fixture
def three(acme):
    return (
        acme,
        OrganisationFactory(name="Beta Texts", is_provider=True),
        OrganisationFactory(name="Gamma Texts", is_provider=True),
    )


@pytest.fixture
def pooled(three, sealed_rows) -> DatasetVersion:
    acme, beta, gamma = three
    return sealed_rows(tokens={acme: 1_000, beta: 1_000, gamma: 1_000})


class TestValueShares:
    def test_three_holders_round_to_exactly_10000_and_money_splits_exactly(self, alice, three, pooled):
        _acme, beta, gamma = three
        record(pooled, [1.0, 1.0, 1.0], ref("three"))
        shares, summary = value_shares(version=pooled)
        # 1 bps each, then 9,997 split three ways: 3332.33 each, the remainder to the lowest key.
        assert summary.job_ref == ref("three")
        assert sum(shares.values()) == 10_000
        assert sorted(shares.values()) == [3333, 3333, 3334]
        assert shares[min(shares)] == 3334
        proposal = allocation_propose_by_value(actor=alice, version=pooled)
        assert proposal.state == AllocationState.PROPOSED and proposal.basis == f"valuation {ref('three')}"
        assert allocation_in_force(version=pooled).from_contributions  # the default stays until approved
        for org, name in ((beta, "bea"), (gamma, "gus")):
            allocation_approve(actor=member(org, name, "admin"), allocation=proposal, organisation=org)
        in_force = allocation_in_force(version=pooled)
        assert in_force.pk == proposal.pk and allocation_shares(in_force) == shares
        # A release of 1,000.01 with a 10% fee: the holders' parts and the fee sum to the cent.
        parts = split(100_001, allocation_shares(in_force), 1_000)
        assert parts.fee + sum(parts.parts.values()) == 100_001
        assert parts.fee == 10_000 and sorted(parts.parts.values()) == [29_997, 29_997, 30_007]
        event = AuditEvent.objects.get(action="marketplace.rights_propose", object_id=proposal.pk)
        assert event.details["basis"] == f"valuation {ref('three')}"

    def test_a_negative_total_counts_as_zero(self, three, pooled):
        acme, beta, gamma = three
        record(pooled, [3.0, 1.0, -2.5], ref("negative"))
        shares, _ = value_shares(version=pooled)
        # The third contribution (gamma's) is worth nothing: 1 bps; 9,997 split 3:1.
        by_org = {org: shares[org.pk] for org in (acme, beta, gamma)}
        assert by_org == {acme: 1 + 7498, beta: 1 + 2499, gamma: 1}
        assert sum(shares.values()) == 10_000

    def test_the_latest_valuation_since_sealing_counts(self, three, pooled):
        record(pooled, [1.0, 1.0, 1.0], ref("old"))
        record(pooled, [0.0, 0.0, 5.0], ref("new"))
        shares, summary = value_shares(version=pooled)
        assert summary.job_ref == ref("new") and max(shares.values()) == 9_998

    def test_a_contributor_the_valuation_pooled_is_refused(self, three, pooled):
        contributions = list(Contribution.objects.filter(version=pooled).order_by("pk"))
        published = {
            "groups": {f"contribution-{contributions[0].pk}": {"count": 20, "sum": 2.0, "mean": 0.1}},
            "summary": {"count": 30, "sum": 2.0},
            "min_group": 20,
        }
        valuation_summary_record(version=pooled, job_ref=ref("pooled"), published=published)
        with pytest.raises(AllocationInvalid) as caught:
            value_shares(version=pooled)
        assert caught.value.errors[0]["code"] == "unreported"


@pytest.fixture
def provider(alice, acme, token_for):
    return token_for(alice, acme, ["read", "provide"])


@pytest.fixture
def pooled_listing(alice, pooled):
    return catalog.listing_create(actor=alice, version=pooled, title="Pooled texts", domain_tags=["support"])


class TestRightsApi:
    def test_a_proposal_by_value(self, provider, three, pooled, pooled_listing):
        record(pooled, [2.0, 1.0, 1.0], ref("api"))
        response = provider.post(
            f"/api/v1/catalog/listings/{pooled_listing.public_id}/rights",
            {"basis": "valuation"},
            format="json",
        )
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["state"] == "proposed" and body["basis"] == f"valuation {ref('api')}"
        assert sum(s["basis_points"] for s in body["shares"]) == 10_000

    def test_no_valuation_is_a_problem_at_basis(self, provider, pooled_listing):
        response = provider.post(
            f"/api/v1/catalog/listings/{pooled_listing.public_id}/rights",
            {"basis": "valuation"},
            format="json",
        )
        body = assert_problem(response, 422, "marketplace.allocation_no_valuation")
        assert body["errors"][0]["pointer"] == "/basis"
        assert RightsAllocation.objects.filter(version=pooled_listing.version).count() <= 1

    @pytest.mark.parametrize(
        ("payload", "pointer"),
        [
            ({"basis": "valuation", "shares": {"org_x": 10_000}}, "/shares"),
            ({"basis": "vibes"}, "/basis"),
            ({}, "/shares"),
        ],
    )
    def test_bad_input_names_its_pointer(self, provider, pooled_listing, payload, pointer):
        response = provider.post(
            f"/api/v1/catalog/listings/{pooled_listing.public_id}/rights", payload, format="json"
        )
        assert response.status_code in (400, 422), response.content
        assert response["Content-Type"] == "application/problem+json"
        assert pointer in [e["pointer"] for e in response.json()["errors"]]


def _metered(alice, listing, price: str) -> None:
    catalog.offer_create(
        actor=alice,
        listing=listing,
        name="Metered",
        terms=terms_doc(),
        price={"model": "metered", "unit_price": price},
    )


class TestPriceSuggestion:
    def test_no_valuation_says_so_and_links_to_the_valuation_page(self, alice, pooled_listing):
        assert price_suggestion(listing=pooled_listing).valuation is None
        client = Client()
        client.force_login(alice)
        page = client.get(f"/market/listings/{pooled_listing.public_id}/").content.decode()
        assert "no valuation since it was sealed" in page
        assert f"/training/valuations/{pooled_listing.version.public_id}/" in page

    def test_median_rate_of_comparable_listings(self, alice, sealed_rows, pooled, pooled_listing):
        # Two published comparables: 3,000 tokens worth 3.0 at 10.00 per M; 1,000 worth 2.0 at 40.00.
        priced = []
        for tokens, value, price in ((3_000, 3.0, "10.00"), (1_000, 2.0, "40.00")):
            version = sealed_rows(tokens={pooled.dataset.owner: tokens})
            listing = catalog.listing_create(actor=alice, version=version, title=f"Comp {tokens}")
            _metered(alice, listing, price)
            catalog.listing_publish(actor=alice, listing=listing)
            record(version, [value], ref(f"comp{tokens}"))
            priced.append(listing)
        record(pooled, [1.0, 1.0, 1.0], ref("mine"))
        suggestion = price_suggestion(listing=pooled_listing)
        # Value per M tokens: comparables 1,000 and 2,000 -> rates 1.0 and 2.0 cents per unit; ours 1,000.
        assert suggestion.value_per_million == Decimal(1000)
        assert [c.value_per_million for c in suggestion.comparables] == [Decimal(1000), Decimal(2000)]
        assert suggestion.rate == Decimal("1.5") and suggestion.suggested_price == 1500
        client = Client()
        client.force_login(alice)
        page = client.get(f"/market/listings/{pooled_listing.public_id}/").content.decode()
        assert 'data-suggested-price="1500"' in page and ref("mine") in page
        assert "median of 2 comparable listings" in page

    def test_a_value_without_comparables_has_no_money_figure(self, alice, pooled, pooled_listing):
        record(pooled, [1.0, 1.0, 1.0], ref("alone"))
        suggestion = price_suggestion(listing=pooled_listing)
        assert suggestion.value_per_million == Decimal(1000) and suggestion.suggested_price is None
        assert "no rate" in suggestion.reason

    def test_no_positive_value_has_no_suggestion(self, pooled, pooled_listing):
        record(pooled, [-1.0, 0.5, 0.2], ref("bad"), total=-0.3)
        suggestion = price_suggestion(listing=pooled_listing)
        assert suggestion.suggested_price is None and "no positive value" in suggestion.reason


class TestRightsPage:
    def test_shows_and_proposes_the_value_weighted_shares(self, alice, three, pooled, pooled_listing):
        record(pooled, [2.0, 1.0, 1.0], ref("page"))
        client = Client()
        client.force_login(alice)
        url = f"/market/listings/{pooled_listing.public_id}/rights/"
        page = client.get(url).content.decode()
        assert "Propose shares by value" in page and ref("page") in page
        # acme: 1 + 4,998.5, which takes the one leftover basis point -> 5,000; the others 2,500.
        assert "<span data-value-bps>5000</span>" in page
        response = client.post(url, {"basis": "valuation"})
        assert response.status_code == 302
        proposal = RightsAllocation.objects.get(version=pooled, state=AllocationState.PROPOSED)
        assert (
            proposal.basis == f"valuation {ref('page')}"
            and sum(allocation_shares(proposal).values()) == 10_000
        )
        assert f"(from valuation {ref('page')})" in client.get(url).content.decode()
        # The other holders see what the proposal was computed from where they approve it.
        beta = three[1]
        holder = Client()
        holder.force_login(member(beta, "bea", "admin"))
        pending = holder.get("/market/rights/").content.decode()
        assert f"Computed from valuation {ref('page')}" in pending and "2500 bps" in pending

    def test_without_a_valuation_says_why(self, alice, pooled_listing):
        client = Client()
        client.force_login(alice)
        page = client.get(f"/market/listings/{pooled_listing.public_id}/rights/").content.decode()
        assert "no valuation since it was sealed" in page
