"""A Hypothesis state machine over orders, decisions, usage, settlement, refunds and payouts.

Whatever the interleaving (including retries of every step), the ledger stays
sound (``ledger_check() == []``), money is conserved (what entered through
top-ups is exactly what sits in balances, escrows, payables, the fee pot and
payouts), each escrow holds what its license says is left, and no usage
record is settled twice.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from common.exceptions import DomainError
from custody import services as custody
from custody.models import Contribution, UsageByContribution, UsageRecord
from marketplace.ledger import balance, escrow_account, ledger_check, trial_balance
from marketplace.models import (
    AccountKind,
    LedgerAccount,
    License,
    LicenseState,
    Order,
    OrderState,
    Payout,
    PayoutState,
    Posting,
    Settlement,
    TopUp,
)
from marketplace.services.funding import topup_record
from marketplace.services.orders import order_approve, order_place, order_reject, order_timeout_sweep
from marketplace.services.payouts import payout_request, payout_send
from marketplace.services.settlement import license_expire, license_job_refund, license_refund, usage_settle
from tests.marketplace.orders.conftest import after_expiry


def account_total(kind: str) -> int:
    return sum(balance(a) for a in LedgerAccount.objects.filter(kind=kind))


@pytest.mark.django_db
def test_money_is_never_created_or_lost(market, acme, cora, alice, bolt, bob, ops, settings_fee):
    offers = {
        "fixed": market("fixed"),
        "metered": market("metered"),
        "exclusive": market("fixed", approval=True, max_licenses=1),
    }

    class Market(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.atomic = transaction.atomic()
            self.atomic.__enter__()
            self.topups = 0
            self.keys = 0

        def teardown(self) -> None:
            transaction.set_rollback(True)
            self.atomic.__exit__(None, None, None)

        def attempt(self, action: Callable[[], object]) -> None:
            # A refused step (a domain error) must leave nothing behind: run it in a savepoint.
            try:
                with transaction.atomic():
                    action()
            except DomainError:
                pass

        @initialize(amount=st.integers(50_000, 400_000))
        def opening_balance(self, amount: int) -> None:
            topup_record(organisation=bolt, amount=amount, currency="EUR", external_ref="opening", actor=ops)

        @rule(amount=st.integers(1, 120_000))
        def top_up(self, amount: int) -> None:
            self.topups += 1
            topup_record(
                organisation=bolt, amount=amount, currency="EUR", external_ref=f"t{self.topups}", actor=ops
            )

        @rule(which=st.sampled_from(sorted(offers)), retry=st.booleans())
        def place(self, which: str, retry: bool) -> None:
            self.keys += 1
            key = f"k{self.keys}"
            self.attempt(lambda: order_place(buyer=bolt, offer=offers[which], actor=bob, idempotency_key=key))
            if retry:
                self.attempt(
                    lambda: order_place(buyer=bolt, offer=offers[which], actor=bob, idempotency_key=key)
                )

        @precondition(lambda self: Order.objects.filter(state=OrderState.PENDING).exists())
        @rule(approve=st.booleans())
        def decide(self, approve: bool) -> None:
            order = Order.objects.filter(state=OrderState.PENDING).first()
            assert order is not None
            if approve:
                self.attempt(lambda: order_approve(order=order, provider=acme, actor=alice))
            else:
                self.attempt(lambda: order_reject(order=order, provider=acme, actor=alice, reason="no"))

        @precondition(lambda self: Order.objects.filter(state=OrderState.PENDING).exists())
        @rule()
        def time_out(self) -> None:
            from django.utils import timezone

            order_timeout_sweep(now=timezone.now() + timedelta(days=10))

        @precondition(lambda self: License.objects.exists())
        @rule(
            pick=st.integers(0, 10),
            job=st.integers(0, 3),
            kind=st.sampled_from(["job_started", "tokens_trained"]),
            quantity=st.integers(0, 3_000_000),
            acme_read=st.sampled_from([0, 1, 37, 100]),
        )
        def use(self, pick: int, job: int, kind: str, quantity: int, acme_read: int) -> None:
            licenses = list(License.objects.order_by("pk"))
            license_ = licenses[pick % len(licenses)]
            reads = None
            if kind == "tokens_trained":
                # What the job read per contribution (acme_read % of it from Acme's), adding up exactly.
                by_org = dict(
                    Contribution.objects.filter(version_id=license_.version_id).values_list(
                        "contributor", "pk"
                    )
                )
                mine = quantity * acme_read // 100
                reads = {by_org[acme.pk]: mine, by_org[cora.pk]: quantity - mine}
            custody.usage_record(
                grant=license_.grant,
                consumer_ref=f"job-{job}",
                kind=kind,
                quantity=quantity,
                by_contribution=reads,
            )

        @rule(twice=st.booleans())
        def settle_sweep(self, twice: bool) -> None:
            ids = list(UsageRecord.objects.filter(settled_at__isnull=True).values_list("pk", flat=True))
            for usage_id in ids + (ids if twice else []):
                usage_settle(usage_id=usage_id)

        @precondition(lambda self: License.objects.filter(state=LicenseState.ACTIVE).exists())
        @rule(how=st.sampled_from(["expire", "revoke", "fault"]), job=st.integers(0, 3))
        def end_or_refund(self, how: str, job: int) -> None:
            license_ = License.objects.filter(state=LicenseState.ACTIVE).order_by("?").first()
            assert license_ is not None
            if how == "expire":
                license_expire(license_id=license_.pk, now=after_expiry(license_))
            elif how == "revoke":
                license_refund(license_=license_, reason="takedown")
            else:
                # Prefer a job that has released money, so reversals are exercised.
                settled = Settlement.objects.filter(license=license_, amount__gt=0, usage__isnull=False)
                consumer = settled.values_list("usage__consumer_ref", flat=True).first() or f"job-{job}"
                license_job_refund(license_=license_, consumer_ref=consumer, reason="platform fault")

        @rule(amount=st.one_of(st.integers(-5, 0), st.integers(1, 20_000)), send=st.booleans())
        def payout(self, amount: int, send: bool) -> None:
            self.attempt(
                lambda: payout_request(organisation=acme, amount=amount, currency="EUR", actor=alice)
            )
            if send:
                for payout in Payout.objects.filter(state=PayoutState.REQUESTED):
                    payout_send(payout_ref=payout.ref)

        @invariant()
        def ledger_is_sound(self) -> None:
            assert ledger_check() == []
            assert all(total == 0 for total in trial_balance().values())

        @invariant()
        def money_is_conserved(self) -> None:
            entered = sum(TopUp.objects.values_list("amount", flat=True))
            held = (
                account_total(AccountKind.ORGANISATION_BALANCE)
                + account_total(AccountKind.ESCROW)
                + account_total(AccountKind.RIGHTS_HOLDER_PAYABLE)
                + account_total(AccountKind.PLATFORM_FEE)
                + account_total(AccountKind.PAYOUTS)
            )
            assert held == entered
            assert -account_total(AccountKind.EXTERNAL_FUNDING) == entered

        @invariant()
        def escrows_match_their_orders(self) -> None:
            for order in Order.objects.all():
                held = balance(escrow_account(order_ref=order.ref, currency=order.currency))
                license_ = License.objects.filter(order=order).first()
                if license_ is not None:
                    assert held == license_.escrow_left >= 0
                    settled = sum(
                        Settlement.objects.filter(license=license_, reversed_at__isnull=True).values_list(
                            "amount", flat=True
                        )
                    )
                    assert settled == license_.released
                elif order.state == OrderState.PENDING:
                    assert held == order.escrow_amount
                else:
                    assert held == 0

        @invariant()
        def metered_releases_follow_the_reads(self) -> None:
            # A metered job that read from one contributor only paid that contributor.
            for settlement in Settlement.objects.filter(
                amount__gt=0, license__order__price_model="metered", usage__isnull=False
            ):
                readers = set(
                    UsageByContribution.objects.filter(
                        usage_id=settlement.usage_id, quantity__gt=0
                    ).values_list("contribution__contributor", flat=True)
                )
                paid = set(settlement.lines.filter(amount__gt=0).values_list("holder", flat=True))
                assert paid <= readers

        @invariant()
        def nothing_settled_twice(self) -> None:
            assert (
                Settlement.objects.filter(usage__isnull=False).count()
                == UsageRecord.objects.filter(settled_at__isnull=False).count()
            )
            assert not Posting.objects.filter(
                account__kind=AccountKind.ORGANISATION_BALANCE, account__balance__lt=0
            )

    run_state_machine_as_test(
        Market,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )


@pytest.fixture
def settings_fee(settings):
    settings.MARKETPLACE_FEE_BPS = 1250
