"""Catalog reads: search over published listings, and visibility (another org's draft answers 404).

A published listing on a sealed version is visible to anyone signed in; the
provider also sees its own drafts and withdrawn listings. Rights allocations
are visible to the version's owner and to the organisations holding a share.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import connection
from django.db.models import Prefetch, Q, QuerySet

from common.models import Organisation
from custody.models import VersionState
from marketplace.exceptions import AllocationNotFound, ListingNotFound, OfferNotFound
from marketplace.models import (
    AllocationState,
    Listing,
    ListingState,
    Offer,
    OfferState,
    OfferTerms,
    RightsAllocation,
)


@dataclass(frozen=True)
class CatalogFilters:
    q: str = ""
    tag: str = ""
    language: str = ""
    price_model: str = ""
    provider_id: int | None = None


def _catalog_visible() -> Q:
    # Model listings (issue 16) have their own catalog: marketplace/services/model_listings.py.
    return Q(state=ListingState.PUBLISHED, version__state=VersionState.SEALED, kind="dataset")


def _visible_to(organisation: Organisation | None) -> Q:
    visible = _catalog_visible()
    if organisation is not None:
        visible |= Q(provider=organisation, kind="dataset")
    return visible


def _text_search(qs: QuerySet[Listing], q: str) -> QuerySet[Listing]:
    """Full-text search on Postgres (ranked); a case-insensitive match elsewhere (SQLite)."""
    if connection.vendor == "postgresql":
        from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector
        from django.db.models import TextField
        from django.db.models.functions import Cast

        vector = (
            SearchVector("title", weight="A", config="english")
            + SearchVector(Cast("domain_tags", TextField()), weight="A", config="english")
            + SearchVector("description", weight="B", config="english")
        )
        query = SearchQuery(q, search_type="websearch", config="english")
        # Match with @@ (ts_rank is never 0, even for a document that does not match).
        return (
            qs.annotate(search=vector, search_rank=SearchRank(vector, query))
            .filter(search=query)
            .order_by("-search_rank", "-published_at", "-pk")
        )
    words = q.split()
    for word in words[:8]:
        qs = qs.filter(
            Q(title__icontains=word) | Q(description__icontains=word) | Q(domain_tags__icontains=word)
        )
    return qs


def listing_search(*, filters: CatalogFilters) -> QuerySet[Listing]:
    """Published listings on sealed versions, filtered, newest first (best match first with ``q``)."""
    qs = (
        Listing.objects.filter(_catalog_visible())
        .select_related("provider", "version__dataset")
        .order_by("-published_at", "-pk")
    )
    if filters.tag:
        # Tags are stored as a JSON list of lowercase slugs: match the quoted slug.
        qs = qs.filter(domain_tags__icontains=f'"{filters.tag.lower()}"')
    if filters.language:
        qs = qs.filter(languages__icontains=f'"{filters.language}"')
    if filters.provider_id is not None:
        qs = qs.filter(provider_id=filters.provider_id)
    if filters.price_model:
        priced = OfferTerms.objects.filter(
            price_model=filters.price_model, offer__state=OfferState.ACTIVE
        ).values("offer__listing_id")
        qs = qs.filter(pk__in=priced)
    if filters.q.strip():
        qs = _text_search(qs, filters.q.strip()[:200])
    return qs


def listing_list_for_provider(*, organisation: Organisation) -> QuerySet[Listing]:
    return (
        Listing.objects.filter(provider=organisation, kind="dataset")
        .select_related("version__dataset")
        .order_by("-created_at", "-pk")
    )


def listing_get_visible(*, organisation: Organisation | None, listing_id: int) -> Listing:
    """A listing the caller may see. :raises ListingNotFound: anything else (another org's draft)."""
    listing = (
        Listing.objects.select_related("provider", "version__dataset__owner")
        .filter(_visible_to(organisation), pk=listing_id)
        .first()
    )
    if listing is None:
        raise ListingNotFound("No such listing.")
    return listing


def listing_get_for_provider(*, organisation: Organisation | None, listing_id: int) -> Listing:
    """The provider's own listing (any state). :raises ListingNotFound."""
    listing = (
        Listing.objects.select_related("provider", "version__dataset__owner")
        .filter(provider=organisation, pk=listing_id, kind="dataset")
        .first()
        if organisation is not None
        else None
    )
    if listing is None:
        raise ListingNotFound("No such listing.")
    return listing


def offer_get_visible(*, organisation: Organisation | None, offer_id: int) -> Offer:
    offer = (
        Offer.objects.select_related("listing__provider", "listing__version")
        .filter(pk=offer_id)
        .filter(
            Q(listing__state=ListingState.PUBLISHED, listing__version__state=VersionState.SEALED)
            | Q(listing__provider=organisation)
            if organisation is not None
            else Q(listing__state=ListingState.PUBLISHED, listing__version__state=VersionState.SEALED)
        )
        .first()
    )
    if offer is None:
        raise OfferNotFound("No such offer.")
    return offer


def offer_get_for_provider(*, organisation: Organisation | None, offer_id: int) -> Offer:
    offer = (
        Offer.objects.select_related("listing__provider", "listing__version")
        .filter(pk=offer_id, listing__provider=organisation)
        .first()
        if organisation is not None
        else None
    )
    if offer is None:
        raise OfferNotFound("No such offer.")
    return offer


def offer_list_for_listing(*, listing: Listing, include_retired: bool = False) -> QuerySet[Offer]:
    """The listing's offers, each with its terms newest first (read by ``offer_terms_current``)."""
    newest_first = OfferTerms.objects.order_by("-number")
    qs = listing.offers.prefetch_related(
        Prefetch("terms_versions", queryset=newest_first, to_attr="terms_newest_first")
    ).order_by("pk")
    return qs if include_retired else qs.filter(state=OfferState.ACTIVE)


def offer_terms_history(*, offer: Offer) -> QuerySet[OfferTerms]:
    return offer.terms_versions.order_by("-number")


def allocation_list_for_version(*, version_id: int) -> QuerySet[RightsAllocation]:
    return (
        RightsAllocation.objects.filter(version_id=version_id)
        .select_related("version")
        .prefetch_related("shares__holder")
        .order_by("-number")
    )


def allocation_get_visible(*, organisation: Organisation | None, allocation_id: int) -> RightsAllocation:
    """An allocation of a version the organisation owns, or one it holds a share in."""
    allocation = (
        RightsAllocation.objects.select_related("version__dataset__owner")
        .filter(
            Q(version__dataset__owner=organisation) | Q(shares__holder=organisation),
            pk=allocation_id,
        )
        .distinct()
        .first()
        if organisation is not None
        else None
    )
    if allocation is None:
        raise AllocationNotFound("No such rights allocation.")
    return allocation


def allocation_pending_for_org(*, organisation: Organisation) -> QuerySet[RightsAllocation]:
    """Proposals waiting for this organisation's approval."""
    return (
        RightsAllocation.objects.filter(
            state=AllocationState.PROPOSED,
            shares__holder=organisation,
            shares__approved_at__isnull=True,
        )
        .select_related("version__dataset")
        .order_by("-created_at")
        .distinct()
    )
