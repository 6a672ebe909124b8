"""Model listings (issue 16 item 1): a custody model listed by its trainer, licensed through the ledger.

A model listing is a ``Listing`` of kind ``model`` on the version the model was trained
on, naming the model (``model_ref``, the job's public id), with one metered ``Offer``
whose terms row holds the model terms (marketplace/model_terms.py). Its facts (receipt
hash, validation metrics, lineage) come from custody's ``CustodyModel``, which training
records, so marketplace never imports training.

Buying (``model_license_buy``) is a minimal path beside ``order_place``, not through it:
the dataset order flow snapshots dataset terms (job templates, epochs) into the grant, and
a model license needs the model terms there instead. It still goes through the ledger the
same way: an ``Order`` (metered, escrow = the tokens bought at the price, from the buyer's
balance), a ``License`` and custody's grant (terms ``kind: model``, no job templates, so
no job can read the data under it). The order freezes release weights (``model_rights``,
marketplace/services/model_rights.py: the trainer's model share, the data's holders of each
version the model read by the tokens read, a custody teacher's holders their share), so the
existing settlement (``usage_settle``) pays them all from each ``tokens_inferred`` usage.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from common.audit import audit_record
from common.models import Organisation, Role, User
from custody import services as custody
from custody.models import CustodyModel, DatasetVersion, VersionState
from custody.services.models_custody import custody_model_get
from marketplace.exceptions import (
    AmountInvalid,
    ListingNotFound,
    ListingStateConflict,
    NotPermitted,
    VersionNotSealed,
)
from marketplace.model_terms import model_terms_validate
from marketplace.models import (
    License,
    Listing,
    ListingState,
    Offer,
    OfferTerms,
    Order,
    OrderState,
    PriceModel,
)
from marketplace.quotes import metered_amount
from marketplace.services.catalog import require_role
from marketplace.services.escrow import escrow_fund, fee_bps_current
from marketplace.services.model_rights import (
    MODEL_KIND,
    model_listing_terms,
    model_rights,
    model_rights_basis,
)
from marketplace.services.orders import _check_orderable, _lock_offer
from marketplace.services.rights import allocation_in_force

MAX_TITLE = 200
__all__ = [
    "MODEL_KIND",
    "model_facts",
    "model_license_buy",
    "model_listing_create",
    "model_listing_get",
    "model_listing_terms",
    "model_rights",
    "model_rights_basis",
]


def _ref(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def model_facts(model: CustodyModel) -> dict[str, Any]:
    """What a model listing shows: receipt hash, validation metrics, lineage, task and base."""
    return {
        "model": model.job_ref,
        "task": model.task,
        "template": model.template,
        "base": model.base_name,
        "receipt_sha256": model.receipt_sha256,
        "metrics": model.metrics,
        "lineage": model.lineage,
    }


@transaction.atomic
def model_listing_create(
    *,
    actor: User,
    organisation: Organisation,
    model_ref: str,
    title: str,
    terms: Any,
    currency: str = "EUR",
    description: str = "",
) -> Listing:
    """List a custody model the organisation trained, published with one metered offer.

    :raises NotFound: no such custody model, or it is not the organisation's (404, not 403).
    :raises NotPermitted: the actor's role is below admin.
    :raises TermsInvalid: malformed terms (pointers under ``/terms``).
    :raises VersionNotSealed: the data version is no longer sealed (taken down, superseded).
    :raises ListingStateConflict: the model already has a live listing.
    """
    require_role(actor, organisation, Role.ADMIN)
    model = custody_model_get(job_ref=model_ref)
    if model.trainer_id != organisation.pk:
        raise ListingNotFound(f"No model in custody is named {model_ref}.", code="custody.model_not_found")
    clean_title = str(title or "").strip()
    if not clean_title or len(clean_title) > MAX_TITLE:
        raise AmountInvalid(
            "A title of 1..200 characters.",
            code="marketplace.listing_invalid",
            errors=[{"pointer": "/title", "code": "invalid", "detail": "1..200 characters."}],
        )
    clean = model_terms_validate(terms, currency=currency)
    version = DatasetVersion.objects.select_for_update(of=("self",)).get(pk=model.version_id)
    if version.state != VersionState.SEALED:
        raise VersionNotSealed(
            f"Version {version.public_id} is {version.state}: its models cannot be listed."
        )
    live = Listing.objects.filter(kind=MODEL_KIND, model_ref=model_ref).exclude(state=ListingState.WITHDRAWN)
    if live.exists():
        raise ListingStateConflict("This model already has a listing.", code="marketplace.listing_exists")
    now = timezone.now()
    listing = Listing.objects.create(
        kind=MODEL_KIND,
        model_ref=model_ref,
        version=version,
        provider=organisation,
        title=clean_title,
        description=str(description or "")[:5000],
        currency=currency,
        state=ListingState.PUBLISHED,
        statistics=model_facts(model),
        created_by=actor,
        published_at=now,
    )
    offer = Offer.objects.create(listing=listing, name="Model license")
    OfferTerms.objects.create(
        offer=offer,
        number=1,
        terms=clean,
        price_model=PriceModel.METERED,
        unit_price=int(clean["inference"]["price_minor"]),
        created_by=actor,
    )
    audit_record(
        action="marketplace.model_listing_create",
        actor=actor,
        organisation=organisation,
        object_type="listing",
        object_id=listing.public_id,
        details={"model": model_ref, "version": version.pk, "terms": clean},
    )
    return listing


def model_listing_get(*, listing_id: int) -> Listing:
    """A published model listing. :raises ListingNotFound:"""
    listing = (
        Listing.objects.select_related("provider", "version")
        .filter(kind=MODEL_KIND, pk=listing_id, state=ListingState.PUBLISHED)
        .first()
    )
    if listing is None:
        raise ListingNotFound("No such model listing.")
    return listing


def _grant_terms(terms_row: OfferTerms, listing: Listing, tokens: int, expires_at: str) -> dict[str, Any]:
    terms = terms_row.terms
    return {
        "kind": MODEL_KIND,
        "model": listing.model_ref,
        "purposes": list(terms["purposes"]),
        # No job may read the data under a model license: only the model is licensed.
        "job_templates": [],
        "max_jobs": 0,
        "max_tokens": tokens,
        "weights_may_leave": False,
        "expires_at": expires_at,
        "inference": {
            "allowed": bool(terms["inference"]["allowed"]),
            "max_tokens_per_call": int(terms["inference"]["max_tokens_per_call"]),
            "cap_tokens": tokens,
        },
        "distillation_allowed": bool(terms["distillation_allowed"]),
        "generation_allowed": bool(terms["generation_allowed"]),
        "fine_tune_allowed": bool(terms["fine_tune_allowed"]),
        "model_share_bps": int(terms["model_share_bps"]),
        # What a student distilled under this license owes the model's holders (read at its submit).
        **({"distill_share_bps": int(terms["distill_share_bps"])} if "distill_share_bps" in terms else {}),
        "offer_terms": terms_row.pk,
    }


def _check_tokens(tokens: Any, cap: int | None) -> int:
    if (
        isinstance(tokens, bool)
        or not isinstance(tokens, int)
        or tokens < 1
        or (cap is not None and tokens > cap)
    ):
        limit = f"1..{cap}" if cap is not None else "a positive integer"
        raise AmountInvalid(
            f"tokens must be {limit} (the inference tokens this license buys).",
            errors=[{"pointer": "/tokens", "code": "out_of_range", "detail": f"An integer {limit}."}],
        )
    return tokens


@transaction.atomic
def model_license_buy(
    *, actor: User | None, buyer: Organisation, listing: Listing, tokens: Any, idempotency_key: str = ""
) -> License:
    """License a model listing for ``tokens`` inference tokens: escrow their price, issue the grant.

    With an ``idempotency_key`` a repeat returns the first license.

    :raises NotATrainer / OrderingRefused: as ``order_place``.
    :raises AmountInvalid: ``tokens`` not a positive integer within the terms' cap.
    :raises InsufficientFunds: the buyer's balance cannot cover the escrow.
    """
    if idempotency_key:
        existing = Order.objects.filter(buyer=buyer, idempotency_key=idempotency_key).first()
        if existing is not None:
            return License.objects.get(order=existing)
    offer = Offer.objects.filter(listing=listing).order_by("pk").first()
    if offer is None or listing.kind != MODEL_KIND:
        raise ListingNotFound("No such model listing.")
    locked = _lock_offer(offer.pk)
    _check_orderable(locked, buyer)
    terms_row = model_listing_terms(listing)
    wanted = _check_tokens(tokens, terms_row.terms["inference"]["cap_tokens"])
    if not terms_row.terms["inference"]["allowed"]:
        raise NotPermitted(
            "This model's terms do not allow inference.", code="marketplace.inference_not_offered"
        )
    version = DatasetVersion.objects.select_for_update().get(pk=listing.version_id)
    ref, lic_ref = _ref("ord"), _ref("lic")
    escrow = metered_amount(terms_row.unit_price, wanted)
    if escrow:
        escrow_fund(
            buyer=buyer,
            currency=listing.currency,
            order_ref=ref,
            amount=escrow,
            key=f"order:{ref}:escrow",
            actor=actor,
        )
    allocation = allocation_in_force(version=version)
    shares, basis = model_rights_basis(listing)
    now = timezone.now()
    expires_at = now + timedelta(days=int(terms_row.terms["term_days"]))
    order = Order.objects.create(
        ref=ref,
        buyer=buyer,
        placed_by=actor,
        listing=listing,
        offer=locked,
        terms=terms_row,
        idempotency_key=idempotency_key,
        state=OrderState.PAID,
        price_model=PriceModel.METERED,
        currency=listing.currency,
        unit_price=terms_row.unit_price,
        escrow_amount=escrow,
        tokens_cap=wanted,
        fee_bps=fee_bps_current(),
        allocation_id=allocation.pk,
        allocation_shares={str(k): v for k, v in shares.items()},
        paid_at=now,
    )
    grant_terms = _grant_terms(terms_row, listing, wanted, expires_at.isoformat())
    frozen = {"allocation": allocation.pk, "shares": order.allocation_shares}
    grant_terms["allocation_sha256"] = hashlib.sha256(
        json.dumps(frozen, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()
    grant = custody.grant_issue(version=version, licensee_org=buyer, terms=grant_terms, external_ref=lic_ref)
    license_ = License.objects.create(
        ref=lic_ref,
        order=order,
        licensee=buyer,
        version=version,
        grant=grant,
        starts_at=now,
        expires_at=expires_at,
        escrowed=escrow,
    )
    audit_record(
        action="marketplace.model_license_issue",
        actor=actor,
        organisation=buyer,
        object_type="license",
        object_id=lic_ref,
        details={
            "order": ref,
            "model": listing.model_ref,
            "tokens": wanted,
            "escrow": escrow,
            "currency": listing.currency,
            "weights": order.allocation_shares,
            "rights": basis,
        },
    )
    return license_
