"""A metered release is split by what the job read from each contribution (issue 15, item 1).

Acme contributed 3,000 platform tokens and Cora 1,000 (the ``market`` fixture), so the frozen
default allocation is 7,500 / 2,500 bps. A job that read only Acme's records pays only Acme; a
job that read both pays each by its tokens read; fixed prices keep the frozen allocation.
"""

from __future__ import annotations

from typing import cast

import pytest

from common.exceptions import Invalid
from common.models import User
from custody import services as custody
from custody.models import Contribution, UsageByContribution, UsageRecord
from marketplace.ledger import balance, ledger_check, payable_account, platform_account, split
from marketplace.models import AccountKind, License, Settlement, SettlementLine
from marketplace.services import rights
from marketplace.services.orders import order_place
from marketplace.services.settlement import usage_settle
from tests.factories import MembershipFactory, UserFactory
from tests.marketplace.orders.conftest import PRICES

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fee_and_price(settings, monkeypatch):
    settings.MARKETPLACE_FEE_BPS = 1000
    # 2.00 per million tokens is too cheap to split visibly: 1,000.00 is 1 minor unit per 10 tokens.
    monkeypatch.setitem(PRICES, "metered", {"model": "metered", "unit_price": "1000.00"})


def owed(org) -> int:
    return balance(payable_account(organisation=org, currency="EUR"))


def fee_pot() -> int:
    return balance(platform_account(kind=AccountKind.PLATFORM_FEE, currency="EUR"))


@pytest.fixture
def cora_admin(cora) -> User:
    user = UserFactory(username="dana")
    MembershipFactory(user=user, organisation=cora, role="admin")
    return cast(User, user)


@pytest.fixture
def metered(market, fund, bolt, bob) -> License:
    offer = market("metered")
    fund(bolt, 10_000_000)
    return License.objects.select_related("grant", "order").get(
        order=order_place(buyer=bolt, offer=offer, actor=bob)
    )


def contributions(license_: License) -> dict[str, Contribution]:
    """The license's version's contributions by contributor: "acme" and "cora"."""
    found = Contribution.objects.filter(version_id=license_.version_id).select_related("contributor")
    return {c.contributor.name.split()[0].lower(): c for c in found}


def tokens(license_: License, ref: str, reads: dict[Contribution, int]) -> UsageRecord:
    return custody.usage_record(
        grant=license_.grant,
        consumer_ref=ref,
        kind="tokens_trained",
        quantity=sum(reads.values()),
        by_contribution={c.pk: n for c, n in reads.items()},
    )


class TestMeteredReleaseByReads:
    def test_a_job_that_read_only_acmes_records_pays_acme_all_of_its_release(self, metered, acme, cora):
        mine = contributions(metered)
        usage = tokens(metered, "job-1", {mine["acme"]: 12_345})
        settlement = usage_settle(usage_id=usage.pk)
        assert settlement is not None
        # 12,345 tokens at 0.1 minor unit each: 1,234 released, 10 % fee by largest remainder.
        assert (settlement.amount, settlement.fee) == (1_234, 123)
        assert (owed(acme), owed(cora), fee_pot()) == (1_111, 0, 123)
        assert list(SettlementLine.objects.filter(settlement=settlement).values_list("holder", "amount")) == [
            (acme.pk, 1_111)
        ]
        assert ledger_check() == []

    def test_a_job_that_read_both_splits_by_tokens_read_not_by_the_frozen_allocation(
        self, metered, acme, cora
    ):
        mine = contributions(metered)
        # Read 1:3, the opposite of the allocation's 3:1.
        usage = tokens(metered, "job-1", {mine["acme"]: 2_500, mine["cora"]: 7_501})
        settlement = usage_settle(usage_id=usage.pk)
        assert settlement is not None and settlement.amount == 1_000
        expected = split(1_000, {acme.pk: 2_500, cora.pk: 7_501}, 1000)
        assert (owed(acme), owed(cora), fee_pot()) == (
            expected.parts[acme.pk],
            expected.parts[cora.pk],
            expected.fee,
        )
        assert owed(acme) + owed(cora) + fee_pot() == 1_000
        assert owed(cora) > owed(acme)

    def test_a_retried_settlement_releases_once(self, metered, acme, cora):
        mine = contributions(metered)
        usage = tokens(metered, "job-1", {mine["acme"]: 4_000, mine["cora"]: 6_000})
        first = usage_settle(usage_id=usage.pk)
        again = usage_settle(usage_id=usage.pk)
        assert first is not None and again is not None and first.pk == again.pk
        assert Settlement.objects.filter(usage=usage).count() == 1
        assert (owed(acme), owed(cora), fee_pot()) == (360, 540, 100)
        metered.refresh_from_db()
        assert metered.released == 1_000 and metered.tokens_settled == 10_000

    def test_a_retried_job_records_its_reads_once(self, metered):
        mine = contributions(metered)
        first = tokens(metered, "job-1", {mine["acme"]: 10})
        second = tokens(metered, "job-1", {mine["cora"]: 99})
        assert first.pk == second.pk and first.quantity == 10
        assert list(
            UsageByContribution.objects.filter(usage=first).values_list("contribution", "quantity")
        ) == [(mine["acme"].pk, 10)]

    def test_an_explicit_allocation_pays_each_holder_its_share_of_what_it_had_read(
        self, market, fund, bolt, bob, alice, acme, cora, cora_admin
    ):
        offer = market("metered")
        version = offer.listing.version
        proposal = rights.allocation_propose(
            actor=alice, version=version, shares={acme.pk: 5_000, cora.pk: 5_000}
        )
        rights.allocation_approve(actor=cora_admin, allocation=proposal, organisation=cora)
        fund(bolt, 10_000_000)
        license_ = License.objects.get(order=order_place(buyer=bolt, offer=offer, actor=bob))
        assert license_.order.shares == {acme.pk: 5_000, cora.pk: 5_000}
        mine = contributions(license_)
        # Half of Acme's 3,000 tokens and all of Cora's 1,000: weights 5,000 x 1/2 and 5,000 x 1.
        usage = tokens(license_, "job-1", {mine["acme"]: 1_500, mine["cora"]: 1_000})
        settlement = usage_settle(usage_id=usage.pk)
        assert settlement is not None and settlement.amount == 250
        expected = split(250, {acme.pk: 1, cora.pk: 2}, 1000)
        assert (owed(acme), owed(cora)) == (expected.parts[acme.pk], expected.parts[cora.pk]) == (75, 150)


class TestFixedPriceKeepsTheFrozenAllocation:
    def test_a_fixed_price_release_follows_the_allocation_whatever_was_read(
        self, market, fund, bolt, bob, acme, cora
    ):
        fund(bolt, 50_000)
        license_ = License.objects.get(order=order_place(buyer=bolt, offer=market("fixed"), actor=bob))
        custody.usage_record(grant=license_.grant, consumer_ref="job-1", kind="job_started", quantity=1)
        started = UsageRecord.objects.get(grant=license_.grant, kind="job_started")
        tokens(license_, "job-1", {contributions(license_)["acme"]: 500})
        usage_settle(usage_id=started.pk)
        # 50,000 with a 10 % fee: 45,000 shared 75 / 25 as frozen at the sale.
        assert (owed(acme), owed(cora), fee_pot()) == (33_750, 11_250, 5_000)


class TestReadsAreChecked:
    def test_reads_that_do_not_add_up_are_refused_with_a_pointer(self, metered):
        mine = contributions(metered)
        with pytest.raises(Invalid) as refused:
            custody.usage_record(
                grant=metered.grant,
                consumer_ref="job-1",
                kind="tokens_trained",
                quantity=100,
                by_contribution={mine["acme"].pk: 60, mine["cora"].pk: 30},
            )
        assert refused.value.code == "custody.usage_reads_invalid"
        assert refused.value.errors[0]["pointer"] == "/by_contribution"
        assert not UsageRecord.objects.filter(grant=metered.grant).exists()

    def test_a_contribution_of_another_version_is_refused(self, metered, market):
        market("fixed")  # another version, with its own contributions
        elsewhere = Contribution.objects.exclude(version_id=metered.version_id).first()
        assert elsewhere is not None
        with pytest.raises(Invalid) as refused:
            custody.usage_record(
                grant=metered.grant,
                consumer_ref="job-1",
                kind="tokens_trained",
                quantity=5,
                by_contribution={elsewhere.pk: 5},
            )
        assert refused.value.errors[0]["pointer"] == f"/by_contribution/{elsewhere.pk}"

    def test_only_tokens_are_metered_per_contribution(self, metered):
        mine = contributions(metered)
        with pytest.raises(Invalid):
            custody.usage_record(
                grant=metered.grant,
                consumer_ref="job-1",
                kind="job_started",
                quantity=1,
                by_contribution={mine["acme"].pk: 1},
            )
