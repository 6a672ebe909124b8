"""Catalog pages (page_urls_catalog), in the ``marketplace`` namespace (mounted under ``market/``)."""

from django.urls import URLPattern, path

from common.pages.legacy import legacy_redirect
from marketplace import pages_catalog as pages

urlpatterns: list[URLPattern] = [
    path("catalog/", pages.catalog_page, name="catalog"),
    path("catalog/<lst:listing_id>/", pages.listing_page, name="listing"),
    path("catalog/<lst:listing_id>/croissant.json", pages.listing_croissant, name="listing_croissant"),
    path("catalog/offers/<ofr:offer_id>/quote/", pages.quote_page, name="quote"),
    path("listings/", pages.provider_listings, name="provider_listings"),
    path("listings/<lst:listing_id>/", pages.listing_edit, name="listing_edit"),
    path("listings/<lst:listing_id>/publish/", pages.listing_publish, name="listing_publish"),
    path("listings/<lst:listing_id>/withdraw/", pages.listing_withdraw, name="listing_withdraw"),
    path("listings/<lst:listing_id>/preview/", pages.preview_page, name="preview"),
    path("listings/<lst:listing_id>/preview/approve/", pages.preview_approve, name="preview_approve"),
    path("listings/<lst:listing_id>/offers/new/", pages.offer_create, name="offer_create"),
    path("offers/<ofr:offer_id>/", pages.offer_edit, name="offer_edit"),
    path("offers/<ofr:offer_id>/retire/", pages.offer_retire, name="offer_retire"),
    path("listings/<lst:listing_id>/rights/", pages.rights_page, name="rights"),
    path("rights/", pages.rights_pending, name="rights_pending"),
    path("rights/<alc:allocation_id>/approve/", pages.rights_approve, name="rights_approve"),
    path("rights/<alc:allocation_id>/reject/", pages.rights_reject, name="rights_reject"),
    # Old integer URLs: a redirect for the provider's members, else 404 (common/pages/legacy.py).
    path(
        "catalog/<int:legacy_listing_id>/",
        legacy_redirect("lst", owner="provider", to="marketplace:listing", kwarg="listing_id"),
        name="legacy_listing",
    ),
    path(
        "listings/<int:legacy_listing_id>/",
        legacy_redirect("lst", owner="provider", to="marketplace:listing_edit", kwarg="listing_id"),
        name="legacy_listing_edit",
    ),
    path(
        "offers/<int:legacy_offer_id>/",
        legacy_redirect("ofr", owner="listing__provider", to="marketplace:offer_edit", kwarg="offer_id"),
        name="legacy_offer_edit",
    ),
]
