"""Rights allocation: defaults from contributions, proposals, approvals, versions, audit."""

from __future__ import annotations

from fractions import Fraction
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.models import AuditEvent, Organisation
from marketplace.exceptions import (
    AllocationInvalid,
    AllocationNotFound,
    AllocationStateConflict,
    NotPermitted,
)
from marketplace.models import AllocationState, RightsAllocation
from marketplace.services.rights import (
    allocation_approve,
    allocation_in_force,
    allocation_propose,
    allocation_reject,
    allocation_shares,
    default_shares,
)
from tests.factories import OrganisationFactory
from tests.marketplace.catalog.conftest import member


@given(st.dictionaries(st.integers(1, 10_000), st.integers(0, 10**12), min_size=1, max_size=40))
@settings(max_examples=300, deadline=None)
def test_default_shares_sum_to_10000_and_stay_within_one_bps(tokens):
    shares = default_shares(tokens, owner_id=-1)
    assert sum(shares.values()) == 10_000
    total = sum(tokens.values())
    if total == 0:
        assert shares == {-1: 10_000}
        return
    for org, count in tokens.items():
        exact = Fraction(count * 10_000, total)
        assert abs(shares.get(org, 0) - exact) <= 1
    assert all(bps >= 1 for bps in shares.values())


@pytest.fixture
def partner(db):
    return OrganisationFactory(name="Partner Texts", is_provider=True)


@pytest.fixture
def shared_version(acme, partner, sealed_rows):
    return sealed_rows(tokens={acme: 2_000, partner: 1_000})


class TestAllocationInForce:
    def test_default_follows_platform_tokens_contributed(self, acme, partner, shared_version):
        allocation = allocation_in_force(version=shared_version)
        assert allocation.from_contributions and allocation.number == 1
        assert allocation_shares(allocation) == {acme.pk: 6667, partner.pk: 3333}
        event = AuditEvent.objects.get(action="marketplace.rights_default")
        assert event.details["shares"] == {str(acme.pk): 6667, str(partner.pk): 3333}

    def test_is_created_once(self, shared_version):
        first = allocation_in_force(version=shared_version)
        assert allocation_in_force(version=shared_version).pk == first.pk
        assert RightsAllocation.objects.filter(version=shared_version).count() == 1


class TestAllocationPropose:
    def test_needs_the_other_contributors_approval(self, alice, acme, partner, shared_version):
        proposal = allocation_propose(
            actor=alice, version=shared_version, shares={acme.pk: 5000, partner.pk: 5000}
        )
        assert proposal.state == AllocationState.PROPOSED and proposal.number == 2
        assert allocation_in_force(version=shared_version).number == 1
        pat = member(partner, "pat", "admin")
        approved = allocation_approve(actor=pat, allocation=proposal, organisation=partner)
        assert approved.state == AllocationState.IN_FORCE
        assert allocation_in_force(version=shared_version).pk == proposal.pk
        assert (
            RightsAllocation.objects.get(number=1, version=shared_version).state == AllocationState.SUPERSEDED
        )
        actions = list(
            AuditEvent.objects.filter(action__startswith="marketplace.rights").values_list(
                "action", flat=True
            )
        )
        assert actions == [
            "marketplace.rights_default",
            "marketplace.rights_propose",
            "marketplace.rights_approve",
            "marketplace.rights_supersede",
            "marketplace.rights_in_force",
        ]

    def test_is_in_force_at_once_for_a_sole_provider(self, alice, acme, sealed_rows):
        version = sealed_rows()
        proposal = allocation_propose(actor=alice, version=version, shares={str(acme.pk): 10_000})
        assert proposal.state == AllocationState.IN_FORCE

    @pytest.mark.parametrize(
        ("shares", "code"),
        [
            ("half", "marketplace.allocation_invalid"),
            ({"acme": 6000, "someone": 4000}, "marketplace.allocation_invalid"),
            ({"acme": 6000, "partner": 3000}, "marketplace.allocation_sum"),
            ({"acme": 10_000}, "marketplace.allocation_contributor_missing"),
            ({"acme": 10_001, "partner": -1}, "marketplace.allocation_invalid"),
            (
                {"acme": 5000, "partner": 4000, "stranger": 1000},
                "marketplace.allocation_holder_not_contributor",
            ),
        ],
    )
    def test_rejects_bad_shares(self, alice, acme, partner, shared_version, shares, code):
        ids = {
            "acme": acme.pk,
            "partner": partner.pk,
            "stranger": cast(Organisation, OrganisationFactory(name="Stranger")).pk,
        }
        if isinstance(shares, dict):
            shares = {ids.get(k, k): v for k, v in shares.items()}
        with pytest.raises(AllocationInvalid) as excinfo:
            allocation_propose(actor=alice, version=shared_version, shares=shares)
        assert excinfo.value.code == code
        assert RightsAllocation.objects.filter(state=AllocationState.PROPOSED).count() == 0

    def test_only_an_admin_proposes(self, acme, partner, shared_version):
        mike = member(acme, "mike2", "member")
        with pytest.raises(NotPermitted):
            allocation_propose(actor=mike, version=shared_version, shares={acme.pk: 5000, partner.pk: 5000})

    def test_a_newer_proposal_supersedes_a_pending_one(self, alice, acme, partner, shared_version):
        first = allocation_propose(
            actor=alice, version=shared_version, shares={acme.pk: 5000, partner.pk: 5000}
        )
        second = allocation_propose(
            actor=alice, version=shared_version, shares={acme.pk: 4000, partner.pk: 6000}
        )
        first.refresh_from_db()
        assert first.state == AllocationState.SUPERSEDED
        assert second.number == 3
        pat = member(partner, "pat", "admin")
        with pytest.raises(AllocationStateConflict):
            allocation_approve(actor=pat, allocation=first, organisation=partner)

    def test_a_holder_may_reject(self, alice, acme, partner, shared_version):
        proposal = allocation_propose(
            actor=alice, version=shared_version, shares={acme.pk: 9000, partner.pk: 1000}
        )
        pat = member(partner, "pat", "admin")
        assert allocation_reject(actor=pat, allocation=proposal, organisation=partner).state == "rejected"
        assert allocation_in_force(version=shared_version).number == 1

    def test_a_non_holder_cannot_approve(self, alice, acme, partner, shared_version):
        proposal = allocation_propose(
            actor=alice, version=shared_version, shares={acme.pk: 9000, partner.pk: 1000}
        )
        other = cast(Organisation, OrganisationFactory(name="Other"))
        olga = member(other, "olga", "admin")
        with pytest.raises(AllocationNotFound):
            allocation_approve(actor=olga, allocation=proposal, organisation=other)
