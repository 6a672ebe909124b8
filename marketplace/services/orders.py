"""Orders and licenses (DESIGN.md "Money"): place, approve, reject, time out; a paid order is a license.

Placing an order pays its escrow at once from the buyer's ledger balance, so
a provider only ever approves money that is there; rejection and approval
timeout refund it. An exclusive offer's slots (``Offer.max_licenses``) are
counted under the offer's row lock: pending orders and live licenses hold a
slot, rejected and timed-out orders and ended licenses free it.

Lock order (everything that locks more than one row here): offer, dataset
version, order/license, grant, organisation balances (the ledger), audit
chain head. Custody locks a version before the audit head, and the ledger a
balance before it, so taking them in this order never deadlocks with either.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from common.audit import audit_record
from common.models import Organisation, User
from common.notifications import notify_event
from custody import services as custody
from custody.models import DatasetVersion
from marketplace.exceptions import (
    AmountInvalid,
    Invalid,
    NotATrainer,
    NotPermitted,
    OfferSoldOut,
    OrderingRefused,
    OrderStateConflict,
    TermsChanged,
)
from marketplace.models import (
    License,
    LicenseState,
    ListingState,
    Offer,
    OfferState,
    Order,
    OrderState,
    PriceModel,
)
from marketplace.quotes import quote
from marketplace.services.catalog import offer_terms_current
from marketplace.services.escrow import escrow_fund, escrow_refund, fee_bps_current
from marketplace.services.rights import allocation_in_force, allocation_shares
from marketplace.terms import grant_snapshot


def _ref(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def _lock_offer(offer_id: int) -> Offer:
    # NO KEY UPDATE on the offer and its joined listing and version: placements and a
    # withdrawal still exclude each other, but a settlement's foreign-key check on the
    # listing (KEY SHARE, at its commit) no longer waits here while it holds the audit
    # chain head this placement waits for (a deadlock under concurrent orders).
    return Offer.objects.select_for_update(no_key=True).select_related("listing__version").get(pk=offer_id)


def _check_orderable(offer: Offer, buyer: Organisation) -> None:
    if not buyer.is_trainer:
        raise NotATrainer(f"{buyer.name} is not a trainer organisation; only trainers place orders.")
    listing = offer.listing
    if listing.state == ListingState.WITHDRAWN:
        raise OrderingRefused(
            f"Listing {listing.pk} was withdrawn and takes no orders.", code="marketplace.listing_withdrawn"
        )
    if listing.state != ListingState.PUBLISHED:
        raise OrderingRefused(
            f"Listing {listing.pk} is not published.", code="marketplace.listing_not_published"
        )
    if offer.state != OfferState.ACTIVE:
        raise OrderingRefused(f"Offer {offer.pk} is retired.", code="marketplace.offer_retired")
    if listing.provider_id == buyer.pk:
        raise OrderingRefused("An organisation cannot buy its own listing.", code="marketplace.own_listing")


def _slots_taken(offer: Offer) -> int:
    pending = Q(state=OrderState.PENDING)
    live = Q(state=OrderState.PAID, license__state=LicenseState.ACTIVE)
    return Order.objects.filter(pending | live, offer=offer).count()


def _check_slot(offer: Offer) -> None:
    if offer.max_licenses is not None and _slots_taken(offer) >= offer.max_licenses:
        raise OfferSoldOut(
            f"Offer {offer.pk} is exclusive and its {offer.max_licenses} license(s) are taken.",
        )


def _check_exclusive_use(offer: Offer, terms: dict[str, Any], version: DatasetVersion) -> None:
    """An exclusive-use license (terms ``constraint.exclusive_use``) is the only one on its version:
    none is sold beside a live or pending one, and it is sold only while no other is live or
    pending. Call it under the version's row lock (placements on one version are serialised).

    :raises OrderingRefused: ``marketplace.version_exclusive`` or ``marketplace.version_licensed``.
    """
    # A pending order holds its listing's version; a live license holds its own, which follows its
    # grant when a withdrawal re-seals the version (the listing it was sold through may have been
    # withdrawn and left behind on the superseded version).
    holding = Order.objects.filter(
        Q(state=OrderState.PENDING, listing__version=version)
        | Q(state=OrderState.PAID, license__state=LicenseState.ACTIVE, license__version=version)
    )
    exclusive = holding.filter(terms__terms__constraint__exclusive_use=True).exclude(offer=offer).first()
    if exclusive is not None:
        held = "awaits approval" if exclusive.state == OrderState.PENDING else "is active"
        raise OrderingRefused(
            f"Dataset version {version.public_id} is licensed for exclusive use (order {exclusive.ref} "
            f"{held}): no other license on it is sold meanwhile.",
            code="marketplace.version_exclusive",
            errors=[
                {"pointer": "/offer", "code": "version_exclusive", "detail": "Licensed for exclusive use."}
            ],
        )
    if (terms.get("constraint") or {}).get("exclusive_use") and holding.exclude(offer=offer).exists():
        raise OrderingRefused(
            f"This offer is for exclusive use of dataset version {version.public_id}, which other "
            "licenses already hold: it can be sold once they have ended.",
            code="marketplace.version_licensed",
            errors=[
                {
                    "pointer": "/offer",
                    "code": "version_licensed",
                    "detail": "Exclusive use needs a version no one else is licensed.",
                }
            ],
        )


def _check_usage(price_model: str, tokens: int | None, periods: int | None) -> None:
    for name, value in (("tokens", tokens), ("periods", periods)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise AmountInvalid(
                f"{name} must be a positive integer.",
                errors=[{"pointer": f"/{name}", "code": "invalid", "detail": "A positive integer."}],
            )


def _order_event(order: Order, kind: str, organisation: Organisation, subject: str) -> None:
    notify_event(
        organisation=organisation,
        kind=kind,
        subject=subject,
        payload={
            "order": order.ref,
            "state": order.state,
            "listing": order.listing.public_id,
            "offer": order.offer.public_id,
            "amount": order.escrow_amount,
            "currency": order.currency,
        },
        object_type="order",
        object_id=order.ref,
    )


@transaction.atomic
def order_place(
    *,
    buyer: Organisation,
    offer: Offer,
    actor: User | None,
    periods: int | None = None,
    idempotency_key: str = "",
    accepted_terms: int | None = None,
) -> Order:
    """Order the offer's current terms for ``buyer`` and escrow the payment from its balance.

    Without provider approval the order is paid at once and its license (and
    custody grant) issued; with approval it waits, holding an exclusive slot.
    With an ``idempotency_key`` a repeat returns the first order. ``accepted_terms``
    is the terms row (id) the buyer read and accepted (the buy page's recap): the
    order records the acceptance, and is refused if the offer's terms changed since.

    :raises NotATrainer: the buyer is not a trainer organisation.
    :raises OrderingRefused: the listing is withdrawn or unpublished, or the offer retired.
    :raises OfferSoldOut: an exclusive offer has no slot left.
    :raises InsufficientFunds: the buyer's balance cannot cover the escrow.
    :raises AmountInvalid / QuoteInvalid: malformed periods.
    :raises TermsChanged: ``accepted_terms`` is not the offer's current terms row.
    """
    if idempotency_key:
        existing = Order.objects.filter(buyer=buyer, idempotency_key=idempotency_key).first()
        if existing is not None:
            return existing
    locked = _lock_offer(offer.pk)
    _check_orderable(locked, buyer)
    terms_row = offer_terms_current(locked)
    if accepted_terms is not None and accepted_terms != terms_row.pk:
        raise TermsChanged(
            f"The terms of {locked.name!r} changed after you accepted them (now version "
            f"{terms_row.number}): read them again before ordering."
        )
    _check_usage(terms_row.price_model, None, periods)
    priced = quote(terms_row, periods=periods if terms_row.price_model == PriceModel.PERIOD else None)
    _check_slot(locked)
    version = DatasetVersion.objects.select_for_update().get(pk=locked.listing.version_id)
    _check_exclusive_use(locked, terms_row.terms, version)
    ref = _ref("ord")
    if priced.escrow:
        # Before anything that may write the audit log: the ledger locks the balance, then the chain head.
        escrow_fund(
            buyer=buyer,
            currency=priced.currency,
            order_ref=ref,
            amount=priced.escrow,
            key=f"order:{ref}:escrow",
            actor=actor,
        )
    allocation = allocation_in_force(version=version)
    listing = locked.listing
    order = Order.objects.create(
        ref=ref,
        buyer=buyer,
        placed_by=actor,
        listing=listing,
        offer=locked,
        terms=terms_row,
        idempotency_key=idempotency_key,
        state=OrderState.PENDING,
        price_model=terms_row.price_model,
        currency=priced.currency,
        unit_price=terms_row.unit_price,
        escrow_amount=priced.escrow,
        tokens_cap=int(terms_row.terms["constraint"]["max_tokens"])
        if terms_row.price_model == "metered"
        else None,
        periods=(periods or 1) if terms_row.price_model == PriceModel.PERIOD else None,
        period_days=terms_row.period_days,
        fee_bps=fee_bps_current(),
        allocation_id=allocation.pk,
        allocation_shares={str(k): v for k, v in allocation_shares(allocation).items()},
        approval_deadline=(
            timezone.now() + timedelta(hours=settings.MARKETPLACE_APPROVAL_HOURS)
            if listing.requires_approval
            else None
        ),
        terms_accepted_at=timezone.now() if accepted_terms is not None else None,
    )
    audit_record(
        action="marketplace.order_place",
        actor=actor,
        organisation=buyer,
        object_type="order",
        object_id=order.ref,
        details={
            "offer": locked.pk,
            "terms": terms_row.pk,
            "escrow": order.escrow_amount,
            "currency": order.currency,
            "fee_bps": order.fee_bps,
            "allocation": allocation.pk,
            "shares": order.allocation_shares,
            "terms_accepted": order.terms_accepted_at is not None,
        },
    )
    _order_event(order, "order.placed", buyer, f"Order {order.ref} placed")
    _order_event(order, "order.placed", listing.provider, f"New order {order.ref} on {listing.title}")
    if not listing.requires_approval:
        _license_issue(order=order, version=version, actor=actor)
    return order


def _expires_at(order: Order, snapshot_expiry: str, starts_at: datetime) -> datetime:
    expires = parse_datetime(snapshot_expiry)
    assert expires is not None  # grant_snapshot writes ISO 8601 with a zone
    if order.price_model == PriceModel.PERIOD and order.periods and order.period_days:
        expires = min(expires, starts_at + timedelta(days=order.periods * order.period_days))
    return expires


def _license_issue(*, order: Order, version: DatasetVersion, actor: User | None) -> License:
    """Pay the order: create its license and have custody issue the grant (same transaction)."""
    starts_at = timezone.now()
    terms = grant_snapshot(order.terms, starts_at=starts_at)
    expires_at = _expires_at(order, terms["expires_at"], starts_at)
    terms["expires_at"] = expires_at.isoformat()
    # The allocation in force, as a hash a receipt can bind (training reads only the grant's terms).
    allocation = {"allocation": order.allocation_id, "shares": order.allocation_shares}
    terms["allocation_sha256"] = hashlib.sha256(
        json.dumps(allocation, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    ref = _ref("lic")
    grant = custody.grant_issue(version=version, licensee_org=order.buyer, terms=terms, external_ref=ref)
    license_ = License.objects.create(
        ref=ref,
        order=order,
        licensee=order.buyer,
        version=version,
        grant=grant,
        starts_at=starts_at,
        expires_at=expires_at,
        escrowed=order.escrow_amount,
        periods_escrowed=1 if order.price_model == PriceModel.PERIOD else 0,
    )
    order.state = OrderState.PAID
    order.paid_at = starts_at
    order.save(update_fields=["state", "paid_at"])
    audit_record(
        action="marketplace.license_issue",
        actor=actor,
        organisation=order.buyer,
        object_type="license",
        object_id=ref,
        details={"order": order.ref, "grant": grant.pk, "expires_at": expires_at.isoformat()},
    )
    _order_event(order, "order.paid", order.buyer, f"Order {order.ref} paid: license {ref}")
    _order_event(order, "order.paid", order.listing.provider, f"Order {order.ref} paid")
    return license_


def _lock_pending(order: Order, provider: Organisation) -> Order:
    locked = Order.objects.select_for_update(of=("self",)).select_related("listing").get(pk=order.pk)
    if locked.listing.provider_id != provider.pk:
        raise NotPermitted(
            "Only the listing's provider decides on its orders.", code="marketplace.not_provider"
        )
    if locked.state != OrderState.PENDING:
        raise OrderStateConflict(f"Order {locked.ref} is {locked.state}, not pending.")
    return locked


@transaction.atomic
def order_approve(*, order: Order, provider: Organisation, actor: User | None) -> Order:
    """The provider approves a pending order: it is paid and its license issued.

    :raises OrderStateConflict: the order is not pending (decided or timed out).
    """
    Offer.objects.select_for_update().get(pk=order.offer_id)
    version = DatasetVersion.objects.select_for_update().get(pk=order.listing.version_id)
    locked = _lock_pending(order, provider)
    locked.decided_by, locked.decided_at = actor, timezone.now()
    locked.save(update_fields=["decided_by", "decided_at"])
    audit_record(
        action="marketplace.order_approve",
        actor=actor,
        organisation=provider,
        object_type="order",
        object_id=locked.ref,
        details={"buyer": locked.buyer_id},
    )
    _order_event(locked, "order.approved", locked.buyer, f"Order {locked.ref} approved")
    _license_issue(order=locked, version=version, actor=actor)
    return locked


def _order_close(*, order: Order, state: str, reason: str, actor: User | None, action: str) -> Order:
    order.state = state
    order.reject_reason = reason[:300]
    order.decided_by, order.decided_at = actor, timezone.now()
    order.save(update_fields=["state", "reject_reason", "decided_by", "decided_at"])
    if order.escrow_amount:
        escrow_refund(order=order, amount=order.escrow_amount, key=f"order:{order.ref}:refund", reason=reason)
    audit_record(
        action=action,
        actor=actor,
        organisation=order.listing.provider,
        object_type="order",
        object_id=order.ref,
        details={"reason": reason[:300], "refunded": order.escrow_amount},
    )
    _order_event(
        order, "order.rejected", order.buyer, f"Order {order.ref} {order.get_state_display().lower()}"
    )
    return order


@transaction.atomic
def order_reject(*, order: Order, provider: Organisation, actor: User | None, reason: str) -> Order:
    """The provider rejects a pending order with a reason: the escrow is refunded, the slot freed.

    :raises OrderStateConflict: not pending. :raises Invalid: no reason given.
    """
    if not reason.strip():
        raise Invalid(
            "A rejection needs a reason.",
            code="marketplace.reason_required",
            errors=[{"pointer": "/reason", "code": "required", "detail": "Say why."}],
        )
    locked = _lock_pending(order, provider)
    return _order_close(
        order=locked, state=OrderState.REJECTED, reason=reason, actor=actor, action="marketplace.order_reject"
    )


def order_timeout_sweep(*, now: datetime | None = None) -> list[str]:
    """Time out pending orders past their approval deadline (refund, free the slot); their refs."""
    now = now or timezone.now()
    due = Order.objects.filter(state=OrderState.PENDING, approval_deadline__lt=now).order_by("pk")
    timed_out = []
    for order_id in due.values_list("pk", flat=True)[:500]:
        with transaction.atomic():
            locked = Order.objects.select_for_update(of=("self",)).select_related("listing").get(pk=order_id)
            if locked.state != OrderState.PENDING:
                continue
            _order_close(
                order=locked,
                state=OrderState.TIMED_OUT,
                reason="The provider did not decide in time.",
                actor=None,
                action="marketplace.order_timeout",
            )
            timed_out.append(locked.ref)
    return timed_out
