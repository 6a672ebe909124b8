"""Catalog pages: the trainer's catalog and listing page; the provider's listing, offer and rights editors.

Pages are thin: find the object through the user's memberships (another
organisation's draft is a 404), check the role (viewers read, members draft,
admins publish and change what trainers see: otherwise 403), call one catalog
service or selector, render.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from common import otp
from common.exceptions import Conflict, DomainError, Invalid, NotFound, NotPermitted
from common.forms import add_domain_error
from common.models import Membership, Organisation, Role
from common.pages.helpers import page_user, raise_http
from common.pages.paging import page_of
from common.permissions import role_at_least
from custody.models import DatasetVersion, VersionState
from marketplace import selectors_catalog as selectors
from marketplace.croissant import croissant_document
from marketplace.exceptions import AllocationInvalid
from marketplace.forms_catalog import (
    CatalogSearchForm,
    ListingCreateForm,
    ListingForm,
    OfferForm,
    PreviewPickForm,
    QuoteForm,
    RightsForm,
)
from marketplace.models import Listing, ListingState, Offer, RightsAllocation
from marketplace.quotes import quote
from marketplace.services import catalog, rights
from marketplace.services.price_suggestion import price_suggestion
from marketplace.terms import terms_plain, terms_validate

LISTINGS_PER_PAGE = 20


def _memberships(request: HttpRequest) -> list[Membership]:
    memberships = list(
        Membership.objects.select_related("organisation")
        .filter(user=page_user(request))
        .order_by("organisation__name")
    )
    current_id = request.session.get("org_id")
    memberships.sort(key=lambda m: m.organisation_id != current_id)
    return memberships


def _current_org(request: HttpRequest) -> Organisation | None:
    memberships = _memberships(request)
    return memberships[0].organisation if memberships else None


def _require(membership: Membership, needed: str, what: str) -> None:
    if not role_at_least(membership.role, needed):
        raise PermissionDenied(
            f"Only {needed}s and above of {membership.organisation.name} may {what}; "
            f"you are {membership.get_role_display().lower()}."
        )


def _editor_role(listing: Listing) -> str:
    return Role.MEMBER if listing.state == ListingState.DRAFT else Role.ADMIN


def _own_listing(request: HttpRequest, listing_id: int) -> tuple[Listing, Membership]:
    """A listing of one of the user's organisations (any state). :raises Http404: any other."""
    for membership in _memberships(request):
        try:
            return (
                selectors.listing_get_for_provider(
                    organisation=membership.organisation, listing_id=listing_id
                ),
                membership,
            )
        except NotFound:
            continue
    raise Http404("No such listing.")


def _own_offer(request: HttpRequest, offer_id: int) -> tuple[Offer, Membership]:
    for membership in _memberships(request):
        try:
            return selectors.offer_get_for_provider(
                organisation=membership.organisation, offer_id=offer_id
            ), membership
        except NotFound:
            continue
    raise Http404("No such offer.")


def _visible_listing(request: HttpRequest, listing_id: int) -> tuple[Listing, Membership | None]:
    for membership in _memberships(request):
        try:
            own = selectors.listing_get_for_provider(
                organisation=membership.organisation, listing_id=listing_id
            )
        except NotFound:
            continue
        return own, membership
    try:
        return selectors.listing_get_visible(organisation=None, listing_id=listing_id), None
    except NotFound as exc:
        raise_http(exc)


def _domain_message(request: HttpRequest, error: DomainError) -> None:
    if isinstance(error, NotFound | NotPermitted):
        raise_http(error)
    messages.error(request, error.detail)


# --- trainer side ------------------------------------------------------------------------------


@otp.signed_in
@require_GET
def catalog_page(request: HttpRequest) -> HttpResponse:
    """Published listings, searchable and filterable."""
    form = CatalogSearchForm(request.GET or None)
    filters = selectors.CatalogFilters()
    if form.is_valid():
        data = form.cleaned_data
        filters = selectors.CatalogFilters(
            q=data["q"], tag=data["tag"], language=data["language"], price_model=data["price_model"]
        )
    page = page_of(request, selectors.listing_search(filters=filters), LISTINGS_PER_PAGE)
    return render(request, "marketplace/catalog/catalog.html", {"form": form, "page": page})


def _offer_rows(listing: Listing, include_retired: bool) -> list[dict[str, Any]]:
    rows = []
    for offer in selectors.offer_list_for_listing(listing=listing, include_retired=include_retired):
        current = catalog.offer_terms_current(offer)
        rows.append(
            {"offer": offer, "terms": current, "plain": terms_plain(current.terms), "quote": quote(current)}
        )
    return rows


@otp.signed_in
@require_GET
def listing_page(request: HttpRequest, listing_id: int) -> HttpResponse:
    """A listing: statistics, approved preview, offers in plain words with a quote form, rights holders."""
    listing, membership = _visible_listing(request, listing_id)
    is_provider = membership is not None
    allocation = rights.allocation_in_force(version=listing.version)
    acting = _memberships(request)
    context = {
        "listing": listing,
        "membership": membership,
        "is_provider": is_provider,
        # The Buy link shows only to whom the buy page would let order: a member of the acting trainer org.
        "can_buy": bool(acting)
        and acting[0].organisation.is_trainer
        and role_at_least(acting[0].role, Role.MEMBER),
        "can_edit": is_provider
        and membership is not None
        and role_at_least(membership.role, _editor_role(listing)),
        "show_preview": listing.preview_approved_at is not None or is_provider,
        "offers": _offer_rows(listing, include_retired=is_provider),
        "shares": allocation.shares.select_related("holder").order_by("-basis_points"),
        "quote_form": QuoteForm(),
    }
    return render(request, "marketplace/catalog/listing.html", context)


@otp.signed_in
@require_GET
def listing_croissant(request: HttpRequest, listing_id: int) -> HttpResponse:
    """The listing's Croissant 1.1 JSON-LD, as a download."""
    listing, _membership = _visible_listing(request, listing_id)
    document = croissant_document(
        listing,
        listing_url=request.build_absolute_uri(
            reverse("marketplace:listing", kwargs={"listing_id": listing.public_id})
        ),
        terms_schema_url=request.build_absolute_uri(reverse("api-catalog-terms-schema")),
    )
    response = HttpResponse(
        json.dumps(document, indent=2, ensure_ascii=False), content_type="application/ld+json"
    )
    response["Content-Disposition"] = f'attachment; filename="listing-{listing.public_id}-croissant.json"'
    return response


@otp.signed_in
@require_GET
def quote_page(request: HttpRequest, offer_id: int) -> HttpResponse:
    """The price of a usage under an offer's current terms (an htmx fragment, or a page)."""
    offer: Offer | None = None
    for membership in [*_memberships(request), None]:
        organisation = membership.organisation if membership else None
        try:
            offer = selectors.offer_get_visible(organisation=organisation, offer_id=offer_id)
            break
        except NotFound:
            continue
    if offer is None:
        raise Http404("No such offer.")
    form = QuoteForm(request.GET or None)
    result, error = None, ""
    if form.is_valid() or not request.GET:
        usage = form.cleaned_data if form.is_bound else {}
        try:
            result = quote(
                catalog.offer_terms_current(offer), tokens=usage.get("tokens"), periods=usage.get("periods")
            )
        except Invalid as exc:
            error = exc.detail
    template = (
        "marketplace/catalog/_quote.html"
        if request.headers.get("HX-Request")
        else "marketplace/catalog/quote.html"
    )
    return render(request, template, {"offer": offer, "form": form, "result": result, "error": error})


# --- provider side: listings ---------------------------------------------------------------


def _provider_membership(request: HttpRequest) -> Membership:
    memberships = _memberships(request)
    if not memberships or not memberships[0].organisation.is_provider:
        raise PermissionDenied("Listings belong to provider organisations; switch to one in the header.")
    return memberships[0]


def _version_preselected(request: HttpRequest, organisation: Organisation) -> dict[str, Any]:
    """``?version=<public id>`` (the sealed version page's "Create a listing") chosen in the form."""
    public_id = request.GET.get("version", "")
    version = (
        DatasetVersion.objects.filter(
            public_id=public_id, dataset__owner=organisation, state=VersionState.SEALED
        ).first()
        if public_id
        else None
    )
    return {"version": version.pk} if version is not None else {}


@otp.signed_in
@require_http_methods(["GET", "POST"])
def provider_listings(request: HttpRequest) -> HttpResponse:
    """The organisation's listings in every state, and (members) a form to list a sealed version."""
    membership = _provider_membership(request)
    organisation = membership.organisation
    form = ListingCreateForm(
        request.POST if request.method == "POST" else None,
        organisation=organisation,
        initial=_version_preselected(request, organisation),
    )
    if request.method == "POST":
        _require(membership, Role.MEMBER, "create listings")
        if form.is_valid():
            fields = form.listing_fields()
            version = fields.pop("version")
            try:
                listing = catalog.listing_create(actor=page_user(request), version=version, **fields)
            except (Invalid, Conflict) as exc:
                add_domain_error(form, exc)
            except (NotFound, NotPermitted) as exc:
                raise_http(exc)
            else:
                messages.success(request, "Listing drafted. Add an offer and pick a preview, then publish.")
                return redirect("marketplace:listing_edit", listing_id=listing.public_id)
    listings = selectors.listing_list_for_provider(organisation=organisation)
    context = {
        "membership": membership,
        "can_act": role_at_least(membership.role, Role.MEMBER),
        "page": page_of(request, listings, LISTINGS_PER_PAGE),
        "form": form,
    }
    return render(request, "marketplace/catalog/provider_listings.html", context)


def _listing_initial(listing: Listing) -> dict[str, Any]:
    return {
        "title": listing.title,
        "description": listing.description,
        "domain_tags": ", ".join(listing.domain_tags),
        "languages": ", ".join(listing.languages),
        "currency": listing.currency,
        "requires_approval": listing.requires_approval,
    }


@otp.signed_in
@require_http_methods(["GET", "POST"])
def listing_edit(request: HttpRequest, listing_id: int) -> HttpResponse:
    """Edit a listing's description; publish, withdraw; links to offers, preview and rights."""
    listing, membership = _own_listing(request, listing_id)
    _require(membership, _editor_role(listing), "edit this listing")
    form = ListingForm(request.POST if request.method == "POST" else None, initial=_listing_initial(listing))
    if request.method == "POST" and form.is_valid():
        try:
            catalog.listing_update(actor=page_user(request), listing=listing, **form.listing_fields())
        except (Invalid, Conflict) as exc:
            add_domain_error(form, exc)
        except (NotFound, NotPermitted) as exc:
            raise_http(exc)
        else:
            messages.success(request, "Listing saved.")
            return redirect("marketplace:listing_edit", listing_id=listing.public_id)
    context = {
        "listing": listing,
        "membership": membership,
        "is_admin": role_at_least(membership.role, Role.ADMIN),
        "form": form,
        "offers": _offer_rows(listing, include_retired=True),
        "suggestion": price_suggestion(listing=listing),
    }
    return render(request, "marketplace/catalog/listing_edit.html", context)


def _listing_action(request: HttpRequest, listing_id: int, action: str) -> HttpResponse:
    listing, membership = _own_listing(request, listing_id)
    _require(membership, Role.ADMIN, f"{action} listings")
    try:
        if action == "publish":
            catalog.listing_publish(actor=page_user(request), listing=listing)
            messages.success(request, "Published: trainers can find it in the catalog.")
        else:
            catalog.listing_withdraw(
                actor=page_user(request), listing=listing, reason=request.POST.get("reason", "")
            )
            messages.success(request, "Withdrawn: no new orders; licenses already sold are unchanged.")
    except DomainError as exc:
        _domain_message(request, exc)
    return redirect("marketplace:listing_edit", listing_id=listing.public_id)


@otp.signed_in
@require_POST
def listing_publish(request: HttpRequest, listing_id: int) -> HttpResponse:
    return _listing_action(request, listing_id, "publish")


@otp.signed_in
@require_POST
def listing_withdraw(request: HttpRequest, listing_id: int) -> HttpResponse:
    return _listing_action(request, listing_id, "withdraw")


# --- provider side: preview ----------------------------------------------------------------


@otp.signed_in
@require_http_methods(["GET", "POST"])
def preview_page(request: HttpRequest, listing_id: int) -> HttpResponse:
    """Pick the preview from your own desensitized records (each view audited); admins approve it."""
    listing, membership = _own_listing(request, listing_id)
    _require(membership, Role.MEMBER, "see preview candidates")
    if request.method == "POST":
        _require(membership, _editor_role(listing), "change the preview")
    try:
        candidates = catalog.preview_candidates(actor=page_user(request), listing=listing)
    except DomainError as exc:
        _domain_message(request, exc)
        return redirect("marketplace:listing_edit", listing_id=listing.public_id)
    picked = [p["record_id"] for p in listing.preview]
    form = PreviewPickForm(
        request.POST if request.method == "POST" else None,
        candidates=candidates,
        initial={"record_ids": picked},
    )
    if request.method == "POST" and form.is_valid():
        try:
            catalog.preview_pick(
                actor=page_user(request), listing=listing, record_ids=form.cleaned_data["record_ids"]
            )
        except (Invalid, Conflict) as exc:
            add_domain_error(form, exc)
        except (NotFound, NotPermitted) as exc:
            raise_http(exc)
        else:
            messages.success(request, "Preview picked. An admin approves it before trainers see it.")
            return redirect("marketplace:preview", listing_id=listing.public_id)
    context = {
        "listing": listing,
        "membership": membership,
        "candidates": candidates,
        "form": form,
        "picked": set(picked),
        "is_admin": role_at_least(membership.role, Role.ADMIN),
    }
    return render(request, "marketplace/catalog/preview.html", context)


@otp.signed_in
@require_POST
def preview_approve(request: HttpRequest, listing_id: int) -> HttpResponse:
    listing, membership = _own_listing(request, listing_id)
    _require(membership, Role.ADMIN, "approve the preview")
    try:
        catalog.preview_approve(actor=page_user(request), listing=listing)
        messages.success(request, "Preview approved: trainers see these records on the listing.")
    except DomainError as exc:
        _domain_message(request, exc)
    return redirect("marketplace:preview", listing_id=listing.public_id)


# --- provider side: offers -------------------------------------------------------------------


def _offer_form_page(
    request: HttpRequest, listing: Listing, offer: Offer | None, initial: dict[str, Any]
) -> HttpResponse:
    form = OfferForm(
        request.POST if request.method == "POST" else None, initial=initial, currency=listing.currency
    )
    plain: list[str] = []
    if request.method == "POST" and form.is_valid():
        try:
            terms = terms_validate(form.terms_document(), version=listing.version)
            plain = terms_plain(terms)
            if "save" in request.POST:
                user = page_user(request)
                if offer is None:
                    catalog.offer_create(
                        actor=user,
                        listing=listing,
                        name=form.cleaned_data["name"],
                        terms=terms,
                        price=form.price_document(),
                    )
                else:
                    catalog.offer_terms_update(
                        actor=user,
                        offer=offer,
                        name=form.cleaned_data["name"],
                        terms=terms,
                        price=form.price_document(),
                    )
                messages.success(request, "Offer saved: new orders get these terms.")
                return redirect("marketplace:listing_edit", listing_id=listing.public_id)
        except (Invalid, Conflict) as exc:
            _add_terms_error(form, exc)
        except (NotFound, NotPermitted) as exc:
            raise_http(exc)
    context = {"listing": listing, "offer": offer, "form": form, "plain": plain}
    return render(request, "marketplace/catalog/offer_edit.html", context)


def _add_terms_error(form: OfferForm, error: DomainError) -> None:
    # Terms pointers are /terms/<section>/<field>, price pointers /price/<field>: the form's names.
    placed = False
    for field_error in error.errors:
        parts = field_error["pointer"].strip("/").split("/")
        names = [p for p in parts if p in form.fields]
        if names:
            form.add_error(names[-1], field_error["detail"])
            placed = True
        elif parts[-1] in ("differential_privacy", "epsilon_cap", "required"):
            form.add_error("epsilon_cap", field_error["detail"])
            placed = True
    if not placed:
        form.add_error(None, error.detail)


@otp.signed_in
@require_http_methods(["GET", "POST"])
def offer_create(request: HttpRequest, listing_id: int) -> HttpResponse:
    """The offer editor for a new offer: terms form, rendered in plain words before saving."""
    listing, membership = _own_listing(request, listing_id)
    _require(membership, _editor_role(listing), "add offers")
    return _offer_form_page(request, listing, None, {})


@otp.signed_in
@require_http_methods(["GET", "POST"])
def offer_edit(request: HttpRequest, offer_id: int) -> HttpResponse:
    """New terms for an offer (a new version; orders keep the version they bought)."""
    offer, membership = _own_offer(request, offer_id)
    listing = offer.listing
    _require(membership, _editor_role(listing), "change offers")
    current = catalog.offer_terms_current(offer)
    price = {
        "model": current.price_model,
        "unit_price": current.unit_price,
        "period_days": current.period_days,
    }
    return _offer_form_page(request, listing, offer, OfferForm.initial_from(offer.name, current.terms, price))


@otp.signed_in
@require_POST
def offer_retire(request: HttpRequest, offer_id: int) -> HttpResponse:
    offer, membership = _own_offer(request, offer_id)
    _require(membership, _editor_role(offer.listing), "retire offers")
    try:
        catalog.offer_retire(actor=page_user(request), offer=offer)
        messages.success(request, f"Offer “{offer.name}” retired; licenses already sold keep their terms.")
    except DomainError as exc:
        _domain_message(request, exc)
    return redirect("marketplace:listing_edit", listing_id=offer.listing.public_id)


# --- rights ----------------------------------------------------------------------------------


@otp.signed_in
@require_http_methods(["GET", "POST"])
def rights_page(request: HttpRequest, listing_id: int) -> HttpResponse:
    """The version's rights holders, the history of allocations, and (admins) a proposal form."""
    listing, membership = _own_listing(request, listing_id)
    version = listing.version
    in_force = rights.allocation_in_force(version=version)
    holders = list(
        Organisation.objects.filter(pk__in=rights.allocation_parties(version=version)).order_by("name")
    )
    form = RightsForm(
        request.POST if request.method == "POST" else None,
        holders=holders,
        initial_bps=rights.allocation_shares(in_force),
    )
    if request.method == "POST" and request.POST.get("basis") == "valuation":
        _require(membership, Role.ADMIN, "propose rights shares")
        try:
            proposal = rights.allocation_propose_by_value(actor=page_user(request), version=version)
        except DomainError as exc:
            _domain_message(request, exc)
        else:
            messages.success(request, f"Allocation v{proposal.number} proposed from {proposal.basis}.")
        return redirect("marketplace:rights", listing_id=listing.public_id)
    if request.method == "POST":
        _require(membership, Role.ADMIN, "propose rights shares")
        if form.is_valid():
            try:
                proposal = rights.allocation_propose(
                    actor=page_user(request), version=version, shares=form.shares()
                )
            except (Invalid, Conflict) as exc:
                form.add_error(None, exc.detail)
            except (NotFound, NotPermitted) as exc:
                raise_http(exc)
            else:
                if proposal.state == "in_force":
                    messages.success(request, f"Allocation v{proposal.number} is in force.")
                else:
                    messages.success(
                        request, f"Allocation v{proposal.number} proposed; the other holders approve it."
                    )
                return redirect("marketplace:rights", listing_id=listing.public_id)
    context = {
        "listing": listing,
        "membership": membership,
        "is_admin": role_at_least(membership.role, Role.ADMIN),
        "in_force": in_force,
        "allocations": selectors.allocation_list_for_version(version_id=version.pk),
        "form": form,
        "by_value": _by_value(version, holders),
    }
    return render(request, "marketplace/catalog/rights.html", context)


def _by_value(version: DatasetVersion, holders: list[Organisation]) -> dict[str, Any]:
    """The value-weighted shares a proposal from the latest valuation would hold, or why there are none."""
    try:
        shares, summary = rights.value_shares(version=version)
    except AllocationInvalid as exc:
        return {"reason": exc.detail}
    names = {org.pk: org.name for org in holders}
    return {
        "summary": summary,
        "shares": [(names.get(org, str(org)), bps) for org, bps in sorted(shares.items())],
    }


@otp.signed_in
@require_GET
def rights_pending(request: HttpRequest) -> HttpResponse:
    """Proposals waiting for your organisation's approval."""
    memberships = _memberships(request)
    if not memberships:
        raise PermissionDenied("Rights proposals are for member organisations.")
    membership = memberships[0]
    context = {
        "membership": membership,
        "is_admin": role_at_least(membership.role, Role.ADMIN),
        "pending": selectors.allocation_pending_for_org(organisation=membership.organisation),
    }
    return render(request, "marketplace/catalog/rights_pending.html", context)


def _allocation_for(request: HttpRequest, allocation_id: int) -> tuple[RightsAllocation, Membership]:
    for membership in _memberships(request):
        try:
            return (
                selectors.allocation_get_visible(
                    organisation=membership.organisation, allocation_id=allocation_id
                ),
                membership,
            )
        except NotFound:
            continue
    raise Http404("No such rights allocation.")


def _allocation_action(request: HttpRequest, allocation_id: int, approve: bool) -> HttpResponse:
    allocation, membership = _allocation_for(request, allocation_id)
    _require(membership, Role.ADMIN, "approve rights shares")
    service = rights.allocation_approve if approve else rights.allocation_reject
    try:
        result = service(
            actor=page_user(request), allocation=allocation, organisation=membership.organisation
        )
        messages.success(request, f"Allocation v{result.number} is now {result.get_state_display().lower()}.")
    except DomainError as exc:
        _domain_message(request, exc)
    return redirect("marketplace:rights_pending")


@otp.signed_in
@require_POST
def rights_approve(request: HttpRequest, allocation_id: int) -> HttpResponse:
    return _allocation_action(request, allocation_id, approve=True)


@otp.signed_in
@require_POST
def rights_reject(request: HttpRequest, allocation_id: int) -> HttpResponse:
    return _allocation_action(request, allocation_id, approve=False)
