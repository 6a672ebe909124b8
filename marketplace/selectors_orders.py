"""Reads for orders, licenses, balances and payouts, scoped to the caller's organisation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import OuterRef, Q, QuerySet, Subquery, Sum

from common.models import Organisation
from custody.models import BudgetState, GrantJob, PrivacyBudgetEntry, UsageKind, UsageRecord
from marketplace.exceptions import LicenseNotFound, OrderNotFound
from marketplace.ledger import balance
from marketplace.models import (
    AccountKind,
    LedgerAccount,
    License,
    LicenseState,
    Order,
    OrderState,
    Payout,
    TopUp,
)


def order_list_for_buyer(*, organisation: Organisation) -> QuerySet[Order]:
    return (
        Order.objects.filter(buyer=organisation)
        .select_related("listing", "offer", "terms", "license", "buyer")
        .order_by("-created_at", "-pk")
    )


def order_list_for_provider(*, organisation: Organisation, state: str | None = None) -> QuerySet[Order]:
    orders = Order.objects.filter(listing__provider=organisation).select_related(
        "listing", "offer", "terms", "buyer", "license"
    )
    if state:
        orders = orders.filter(state=state)
    return orders.order_by("-created_at", "-pk")


def order_get_for_org(*, organisation: Organisation, ref: str) -> Order:
    """An order the organisation placed or sells. :raises OrderNotFound: any other."""
    order = (
        Order.objects.select_related("listing", "offer", "buyer", "terms")
        .filter(Q(buyer=organisation) | Q(listing__provider=organisation), ref=ref)
        .first()
    )
    if order is None:
        raise OrderNotFound("No such order.")
    return order


def offer_holdings_for_org(
    *, organisation: Organisation, offer_id: int, except_key: str = ""
) -> tuple[list[License], list[Order]]:
    """The organisation's active licenses on an offer and its orders on it still awaiting approval.

    ``except_key`` leaves out the order placed with that idempotency key (a resubmitted form's own order).
    """
    orders = Order.objects.filter(buyer=organisation, offer_id=offer_id)
    if except_key:
        orders = orders.exclude(idempotency_key=except_key)
    licenses = list(
        License.objects.filter(order__in=orders, state=LicenseState.ACTIVE)
        .select_related("order")
        .order_by("-created_at", "-pk")
    )
    pending = list(orders.filter(state=OrderState.PENDING).order_by("-created_at", "-pk"))
    return licenses, pending


def license_list_for_org(*, organisation: Organisation) -> QuerySet[License]:
    """The organisation's licenses, with what ``license_remaining`` reads annotated (no query per row)."""
    return (
        License.objects.filter(licensee=organisation)
        .select_related("order__listing", "grant", "licensee", "version")
        .annotate(tokens_trained_sum=_tokens_trained(OuterRef("grant")), epsilon_spent_sum=_epsilon_spent())
        .order_by("-created_at", "-pk")
    )


def _tokens_trained(grant: Any) -> Subquery:
    """Platform tokens trained under ``grant`` (an id, or an ``OuterRef`` to one)."""
    usage = UsageRecord.objects.filter(grant=grant, kind=UsageKind.TOKENS_TRAINED)
    return Subquery(usage.values("grant").annotate(t=Sum("quantity")).values("t")[:1])


def _epsilon_spent() -> Subquery:
    """Epsilon reserved or committed by the jobs of the outer license's grant (released budget is back)."""
    consumers = GrantJob.objects.filter(grant=OuterRef(OuterRef("grant"))).values("consumer_ref")
    entries = PrivacyBudgetEntry.objects.filter(
        version_id=OuterRef("grant__version_id"), consumer_ref__in=consumers
    ).exclude(state=BudgetState.RELEASED)
    return Subquery(entries.values("version_id").annotate(e=Sum("epsilon")).values("e")[:1])


def license_get_for_org(*, organisation: Organisation, ref: str) -> License:
    """A license the organisation holds or granted. :raises LicenseNotFound: any other."""
    license_ = (
        License.objects.select_related("order__listing", "grant")
        .filter(Q(licensee=organisation) | Q(order__listing__provider=organisation), ref=ref)
        .first()
    )
    if license_ is None:
        raise LicenseNotFound("No such license.")
    return license_


@dataclass(frozen=True)
class Remaining:
    """What a license has left, read from its custody grant."""

    jobs_used: int
    jobs_allowed: int | None
    tokens_trained: int
    tokens_allowed: int | None
    epsilon_spent: Decimal
    epsilon_cap: Decimal | None
    expires_at: datetime | None
    grant_state: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobs_used": self.jobs_used,
            "jobs_allowed": self.jobs_allowed,
            "tokens_trained": self.tokens_trained,
            "tokens_allowed": self.tokens_allowed,
            "epsilon_spent": str(self.epsilon_spent),
            "epsilon_cap": None if self.epsilon_cap is None else str(self.epsilon_cap),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "grant_state": self.grant_state,
        }


def license_remaining(license_: License) -> Remaining:
    """What the license has left: from ``license_list_for_org``'s annotations, else two queries."""
    grant = license_.grant
    terms = grant.terms
    if hasattr(license_, "tokens_trained_sum"):
        # Annotations are not model fields (mypy does not know them): read them by name.
        tokens = getattr(license_, "tokens_trained_sum", None)
        spent = getattr(license_, "epsilon_spent_sum", None)
    else:
        tokens = UsageRecord.objects.filter(grant=grant, kind=UsageKind.TOKENS_TRAINED).aggregate(
            t=Sum("quantity")
        )["t"]
        consumers = grant.jobs.values("consumer_ref")
        spent = (
            PrivacyBudgetEntry.objects.filter(version_id=grant.version_id, consumer_ref__in=consumers)
            .exclude(state=BudgetState.RELEASED)
            .aggregate(e=Sum("epsilon"))["e"]
        )
    cap = terms.get("epsilon_cap")
    return Remaining(
        jobs_used=grant.jobs_reserved,
        jobs_allowed=terms.get("max_jobs"),
        tokens_trained=int(tokens or 0),
        tokens_allowed=terms.get("max_tokens"),
        epsilon_spent=Decimal(spent or 0),
        epsilon_cap=Decimal(str(cap)) if cap is not None else None,
        expires_at=grant.expires_at,
        grant_state=grant.state,
    )


def balances_for_org(*, organisation: Organisation) -> list[dict[str, Any]]:
    """The organisation's spendable balances and what it is owed, per currency."""
    accounts = LedgerAccount.objects.filter(organisation=organisation).order_by("kind", "currency")
    return [
        {"kind": account.kind, "currency": account.currency, "amount": balance(account)}
        for account in accounts
        if account.kind in (AccountKind.ORGANISATION_BALANCE, AccountKind.RIGHTS_HOLDER_PAYABLE)
    ]


def payout_list_for_org(*, organisation: Organisation) -> QuerySet[Payout]:
    return (
        Payout.objects.filter(organisation=organisation)
        .select_related("organisation")
        .order_by("-created_at", "-pk")
    )


def topup_list(*, organisation: Organisation | None = None) -> QuerySet[TopUp]:
    topups = TopUp.objects.select_related("organisation").order_by("-created_at", "-pk")
    return topups.filter(organisation=organisation) if organisation is not None else topups
