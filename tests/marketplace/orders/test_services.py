"""Orders, licenses, escrow, settlement, refunds and payouts against a real database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from common.models import AuditEvent, Notification, WorkItem
from custody.models import GrantState, UsageRecord
from custody.services import version_takedown
from marketplace.exceptions import (
    AmountInvalid,
    InsufficientFunds,
    NotATrainer,
    OfferSoldOut,
    OrderingRefused,
    OrderStateConflict,
    PayoutExceedsPayable,
)
from marketplace.ledger import (
    balance,
    escrow_account,
    organisation_balance_account,
    payable_account,
    platform_account,
)
from marketplace.models import (
    AccountKind,
    License,
    LicenseState,
    OrderState,
    Payout,
    PayoutState,
    Settlement,
)
from marketplace.services import catalog
from marketplace.services.orders import order_approve, order_place, order_reject, order_timeout_sweep
from marketplace.services.payouts import payout_request, payout_send
from marketplace.services.settlement import (
    license_expire,
    license_job_refund,
    license_period_tick,
    license_refund,
    usage_settle,
)
from marketplace.tasks import marketplace_sweep
from tests.custody.conftest import drain
from tests.marketplace.orders.conftest import after_expiry, use
from tests.marketplace.orders.gateway import RecordingGateway


def buyer_balance(org) -> int:
    return balance(organisation_balance_account(organisation=org, currency="EUR"))


def owed(org) -> int:
    return balance(payable_account(organisation=org, currency="EUR"))


def fee_pot() -> int:
    return balance(platform_account(kind=AccountKind.PLATFORM_FEE, currency="EUR"))


@pytest.fixture(autouse=True)
def _fee(settings):
    settings.MARKETPLACE_FEE_BPS = 1000


class TestOrderPlace:
    def test_pays_at_once_and_issues_the_license_and_its_grant(self, market, acme, cora, bolt, bob, fund):
        offer = market("fixed")
        fund(bolt, 80_000)
        order = order_place(buyer=bolt, offer=offer, actor=bob)
        assert order.state == OrderState.PAID
        license_ = License.objects.get(order=order)
        assert license_.grant.external_ref == license_.ref
        assert license_.grant.licensee_id == bolt.pk
        assert license_.grant.terms["max_jobs"] == 3
        assert buyer_balance(bolt) == 30_000
        assert balance(escrow_account(order_ref=order.ref, currency="EUR")) == 50_000
        assert order.shares == {acme.pk: 7500, cora.pk: 2500}
        assert order.fee_bps == 1000
        actions = set(AuditEvent.objects.values_list("action", flat=True))
        assert {"marketplace.order_place", "marketplace.license_issue", "custody.grant_issue"} <= actions
        kinds = set(Notification.objects.filter(organisation=bolt).values_list("kind", flat=True))
        assert kinds == {"order.placed", "order.paid"}
        assert Notification.objects.filter(organisation=acme, kind="order.paid").exists()

    def test_refuses_without_enough_balance_and_stores_nothing(self, market, bolt, bob, fund):
        offer = market("fixed")
        fund(bolt, 100)
        with pytest.raises(InsufficientFunds):
            order_place(buyer=bolt, offer=offer, actor=bob)
        assert not License.objects.exists()
        assert buyer_balance(bolt) == 100

    def test_refuses_a_withdrawn_listing(self, market, alice, bolt, bob, fund):
        offer = market("fixed")
        catalog.listing_withdraw(actor=alice, listing=offer.listing, reason="gone")
        fund(bolt, 80_000)
        with pytest.raises(OrderingRefused) as caught:
            order_place(buyer=bolt, offer=offer, actor=bob)
        assert caught.value.code == "marketplace.listing_withdrawn"

    def test_refuses_a_provider_only_buyer(self, market, acme, alice):
        with pytest.raises(NotATrainer):
            order_place(buyer=acme, offer=market("fixed"), actor=alice)

    def test_an_exclusive_offer_sells_once(self, market, bolt, bob, fund):
        offer = market("fixed", max_licenses=1)
        fund(bolt, 200_000)
        order_place(buyer=bolt, offer=offer, actor=bob)
        with pytest.raises(OfferSoldOut):
            order_place(buyer=bolt, offer=offer, actor=bob)

    def test_the_same_idempotency_key_is_one_order(self, market, bolt, bob, fund):
        offer = market("fixed")
        fund(bolt, 200_000)
        first = order_place(buyer=bolt, offer=offer, actor=bob, idempotency_key="k-12345678")
        again = order_place(buyer=bolt, offer=offer, actor=bob, idempotency_key="k-12345678")
        assert again.pk == first.pk
        assert buyer_balance(bolt) == 150_000


class TestApproval:
    def test_approval_pays_and_issues(self, market, acme, alice, bolt, bob, fund):
        offer = market("fixed", approval=True)
        fund(bolt, 50_000)
        order = order_place(buyer=bolt, offer=offer, actor=bob)
        assert order.state == OrderState.PENDING
        assert not License.objects.exists()
        assert buyer_balance(bolt) == 0  # escrowed while waiting
        order_approve(order=order, provider=acme, actor=alice)
        order.refresh_from_db()
        assert order.state == OrderState.PAID
        assert License.objects.get(order=order).state == LicenseState.ACTIVE

    def test_rejection_refunds_and_frees_the_exclusive_slot(self, market, acme, alice, bolt, bob, fund):
        offer = market("fixed", approval=True, max_licenses=1)
        fund(bolt, 100_000)
        order = order_place(buyer=bolt, offer=offer, actor=bob)
        with pytest.raises(OfferSoldOut):
            order_place(buyer=bolt, offer=offer, actor=bob)
        order_reject(order=order, provider=acme, actor=alice, reason="Not for competitors")
        order.refresh_from_db()
        assert (order.state, order.reject_reason) == (OrderState.REJECTED, "Not for competitors")
        assert buyer_balance(bolt) == 100_000
        assert order_place(buyer=bolt, offer=offer, actor=bob).state == OrderState.PENDING
        with pytest.raises(OrderStateConflict):
            order_approve(order=order, provider=acme, actor=alice)

    def test_timeout_refunds_and_frees_the_slot(self, market, bolt, bob, fund):
        offer = market("fixed", approval=True, max_licenses=1)
        fund(bolt, 50_000)
        order = order_place(buyer=bolt, offer=offer, actor=bob)
        assert order_timeout_sweep(now=timezone.now() + timedelta(days=30)) == [order.ref]
        order.refresh_from_db()
        assert order.state == OrderState.TIMED_OUT
        assert buyer_balance(bolt) == 50_000
        assert order_timeout_sweep(now=timezone.now() + timedelta(days=30)) == []


class TestSettlement:
    def test_fixed_price_is_released_at_the_first_job_start_exactly_once(
        self, market, acme, cora, bolt, bob, fund
    ):
        offer = market("fixed")
        fund(bolt, 50_000)
        license_ = License.objects.get(order=order_place(buyer=bolt, offer=offer, actor=bob))
        first = use(license_, "job-1", "job_started", 1)
        use(license_, "job-1", "tokens_trained", 100_000)
        second = use(license_, "job-2", "job_started", 1)
        for usage in (first, second, first):
            usage_settle(usage_id=usage.pk)
        # 50,000 with a 10 % fee: 45,000 shared 75 / 25.
        assert (owed(acme), owed(cora), fee_pot()) == (33_750, 11_250, 5_000)
        assert Settlement.objects.filter(license=license_).count() == 2
        assert UsageRecord.objects.get(pk=first.pk).settled_at is not None

    def test_metered_releases_per_token_rounded_down_and_refunds_the_rest(
        self, market, acme, cora, bolt, bob, fund
    ):
        offer = market("metered")
        fund(bolt, 1_000)
        license_ = License.objects.get(order=order_place(buyer=bolt, offer=offer, actor=bob))
        assert license_.escrowed == 1_000
        for n, tokens in enumerate([333_333, 333_333, 333_334]):
            usage_settle(usage_id=use(license_, f"job-{n}", "tokens_trained", tokens).pk)
        license_.refresh_from_db()
        # A million tokens at 200 per million: 200, whatever the chunks.
        assert license_.released == 200
        expired = license_expire(license_id=license_.pk, now=after_expiry(license_))
        assert (expired.state, expired.refunded) == (LicenseState.EXPIRED, 800)
        assert buyer_balance(bolt) == 800
        expired.grant.refresh_from_db()
        assert expired.grant.state == GrantState.REVOKED
        assert Notification.objects.filter(organisation=bolt, kind="license.expired").exists()
        assert AuditEvent.objects.filter(action="marketplace.license_expire", object_id=license_.ref).exists()

    def test_metered_release_never_exceeds_the_escrow(self, market, bolt, bob, fund):
        offer = market("metered")
        fund(bolt, 1_000)
        license_ = License.objects.get(order=order_place(buyer=bolt, offer=offer, actor=bob))
        usage_settle(usage_id=use(license_, "job-1", "tokens_trained", 9_000_000).pk)
        license_.refresh_from_db()
        assert (license_.released, license_.escrow_left) == (1_000, 0)

    def test_an_unused_fixed_license_is_refunded_at_expiry(self, market, bolt, bob, fund):
        offer = market("fixed")
        fund(bolt, 50_000)
        license_ = License.objects.get(order=order_place(buyer=bolt, offer=offer, actor=bob))
        license_expire(license_id=license_.pk, now=after_expiry(license_))
        assert buyer_balance(bolt) == 50_000

    def test_the_sweep_settles_through_work_items(self, market, acme, bolt, bob, fund):
        offer = market("fixed")
        fund(bolt, 50_000)
        license_ = License.objects.get(order=order_place(buyer=bolt, offer=offer, actor=bob))
        usage = use(license_, "job-1", "job_started", 1)
        report = marketplace_sweep()
        assert report["settle"] == [usage.pk]
        drain()
        assert Settlement.objects.get(usage=usage).amount == 50_000
        assert marketplace_sweep()["settle"] == []
        assert WorkItem.objects.filter(kind="marketplace.settle_usage").count() == 1

    def test_the_sweep_expires_licenses_through_work_items(self, market, bolt, bob, fund):
        fund(bolt, 50_000)
        license_ = License.objects.get(order=order_place(buyer=bolt, offer=market("fixed"), actor=bob))
        assert marketplace_sweep()["expire"] == []
        License.objects.filter(pk=license_.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
        assert marketplace_sweep()["expire"] == [license_.pk]
        drain()
        license_.refresh_from_db()
        assert (license_.state, license_.refunded) == (LicenseState.EXPIRED, 50_000)
        assert marketplace_sweep()["expire"] == []

    def test_a_platform_fault_returns_the_jobs_release_to_escrow(self, market, acme, bolt, bob, fund):
        offer = market("fixed")
        fund(bolt, 50_000)
        license_ = License.objects.get(order=order_place(buyer=bolt, offer=offer, actor=bob))
        usage_settle(usage_id=use(license_, "job-1", "job_started", 1).pk)
        assert license_job_refund(license_=license_, consumer_ref="job-1", reason="GPU node lost") == 50_000
        assert license_job_refund(license_=license_, consumer_ref="job-1", reason="GPU node lost") == 0
        assert owed(acme) == 0
        license_expire(license_id=license_.pk, now=after_expiry(license_))
        assert buyer_balance(bolt) == 50_000

    def test_a_takedown_refunds_unreleased_escrow_and_revokes(self, market, alice, bolt, bob, fund, ops):
        offer = market("metered")
        fund(bolt, 1_000)
        license_ = License.objects.get(order=order_place(buyer=bolt, offer=offer, actor=bob))
        use(license_, "job-1", "tokens_trained", 1_000_000)
        with self.captured_on_commit():
            version_takedown(actor=ops, version=license_.version, reason="court order")
        drain()  # the takedown's refund and withdrawal are work items (test_takedown.py)
        license_.refresh_from_db()
        assert license_.state == LicenseState.REVOKED
        assert (license_.released, license_.refunded) == (200, 800)
        assert buyer_balance(bolt) == 800
        offer.listing.refresh_from_db()
        assert offer.listing.state == "withdrawn"

    @staticmethod
    def captured_on_commit():
        from django.test import TestCase

        return TestCase.captureOnCommitCallbacks(execute=True)

    def test_per_period_escrows_each_period_and_stops_when_unpaid(self, market, acme, bolt, bob, fund):
        offer = market("period")
        fund(bolt, 6_000)
        order = order_place(buyer=bolt, offer=offer, actor=bob, periods=3)
        license_ = License.objects.get(order=order)
        assert (license_.escrowed, buyer_balance(bolt)) == (3_000, 3_000)
        license_period_tick(license_id=license_.pk, now=license_.starts_at + timedelta(days=30, seconds=1))
        license_.refresh_from_db()
        assert (license_.released, license_.escrowed, license_.periods_escrowed) == (3_000, 6_000, 2)
        license_period_tick(license_id=license_.pk, now=license_.starts_at + timedelta(days=60, seconds=1))
        license_.refresh_from_db()
        assert license_.state == LicenseState.REVOKED
        assert license_.released == 6_000


class TestPayouts:
    @pytest.fixture(autouse=True)
    def _gateway(self, settings):
        RecordingGateway.reset()
        settings.MARKETPLACE_PAYMENT_GATEWAY = "tests.marketplace.orders.gateway.RecordingGateway"

    @pytest.fixture
    def earned(self, market, acme, bolt, bob, ops):
        from marketplace.services.funding import topup_record

        RecordingGateway.confirmed["pi_1"] = 50_000
        topup_record(organisation=bolt, amount=50_000, currency="EUR", external_ref="pi_1", actor=ops)
        license_ = License.objects.get(order=order_place(buyer=bolt, offer=market("fixed"), actor=bob))
        usage_settle(usage_id=use(license_, "job-1", "job_started", 1).pk)
        return owed(acme)

    def test_a_payout_leaves_the_payable_once(self, earned, acme, alice):
        payout = payout_request(
            organisation=acme, amount=30_000, currency="EUR", actor=alice, idempotency_key="p-1"
        )
        assert (
            payout_request(
                organisation=acme, amount=30_000, currency="EUR", actor=alice, idempotency_key="p-1"
            ).pk
            == payout.pk
        )
        drain()
        payout.refresh_from_db()
        assert payout.state == PayoutState.SENT
        assert RecordingGateway.sent == {payout.ref: 30_000}
        assert owed(acme) == earned - 30_000
        with pytest.raises(PayoutExceedsPayable):
            payout_request(organisation=acme, amount=earned, currency="EUR", actor=alice)

    def test_a_gateway_outage_is_retried_and_sends_once(self, earned, acme, alice):
        RecordingGateway.fail_transiently = 1
        payout = payout_request(organisation=acme, amount=2_000, currency="EUR", actor=alice)
        drain()
        payout.refresh_from_db()
        item = WorkItem.objects.get(kind="marketplace.payout_send", ref=payout.ref)
        assert (payout.state, item.attempts) == (PayoutState.SENT, 2)
        assert RecordingGateway.sent == {payout.ref: 2_000}

    def test_a_refused_payout_is_owed_again(self, earned, acme, alice):
        payout = payout_request(organisation=acme, amount=1_000, currency="EUR", actor=alice)
        RecordingGateway.refuse.add(payout.ref)
        payout_send(payout_ref=payout.ref)
        payout.refresh_from_db()
        assert payout.state == PayoutState.FAILED
        assert owed(acme) == earned
        assert Payout.objects.count() == 1

    def test_a_top_up_the_gateway_did_not_receive_is_refused(self, bolt, ops):
        from marketplace.services.funding import topup_record

        with pytest.raises(AmountInvalid):
            topup_record(organisation=bolt, amount=500, currency="EUR", external_ref="pi_unknown", actor=ops)
        assert buyer_balance(bolt) == 0

    @pytest.mark.parametrize("amount", [0, -5, 1.5, True, "100"])
    def test_malformed_amounts_are_refused(self, acme, alice, amount):
        with pytest.raises(AmountInvalid):
            payout_request(organisation=acme, amount=amount, currency="EUR", actor=alice)


def test_license_refund_is_idempotent(market, bolt, bob, fund):
    fund(bolt, 50_000)
    license_ = License.objects.get(order=order_place(buyer=bolt, offer=market("fixed"), actor=bob))
    license_refund(license_=license_, reason="operator decision")
    license_refund(license_=license_, reason="operator decision")
    assert buyer_balance(bolt) == 50_000
