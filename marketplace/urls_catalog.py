"""Catalog API routes under /api/v1/catalog/."""

from django.urls import URLPattern, path

from marketplace import api_catalog as api

urlpatterns: list[URLPattern] = [
    path("catalog/terms-schema", api.TermsSchemaApi.as_view(), name="api-catalog-terms-schema"),
    path("catalog/listings", api.ListingListCreateApi.as_view(), name="api-catalog-listings"),
    path("catalog/listings/<lst:listing_id>", api.ListingDetailApi.as_view(), name="api-catalog-listing"),
    path(
        "catalog/listings/<lst:listing_id>/publish",
        api.ListingPublishApi.as_view(),
        name="api-catalog-listing-publish",
    ),
    path(
        "catalog/listings/<lst:listing_id>/withdraw",
        api.ListingWithdrawApi.as_view(),
        name="api-catalog-listing-withdraw",
    ),
    path(
        "catalog/listings/<lst:listing_id>/croissant",
        api.ListingCroissantApi.as_view(),
        name="api-catalog-listing-croissant",
    ),
    path(
        "catalog/listings/<lst:listing_id>/preview-candidates",
        api.PreviewCandidatesApi.as_view(),
        name="api-catalog-preview-candidates",
    ),
    path(
        "catalog/listings/<lst:listing_id>/preview", api.PreviewPickApi.as_view(), name="api-catalog-preview"
    ),
    path(
        "catalog/listings/<lst:listing_id>/preview/approve",
        api.PreviewApproveApi.as_view(),
        name="api-catalog-preview-approve",
    ),
    path("catalog/listings/<lst:listing_id>/offers", api.OfferCreateApi.as_view(), name="api-catalog-offers"),
    path(
        "catalog/listings/<lst:listing_id>/rights", api.ListingRightsApi.as_view(), name="api-catalog-rights"
    ),
    path("catalog/offers/<ofr:offer_id>", api.OfferDetailApi.as_view(), name="api-catalog-offer"),
    path("catalog/offers/<ofr:offer_id>/terms", api.OfferTermsApi.as_view(), name="api-catalog-offer-terms"),
    path(
        "catalog/offers/<ofr:offer_id>/retire", api.OfferRetireApi.as_view(), name="api-catalog-offer-retire"
    ),
    path("catalog/offers/<ofr:offer_id>/quote", api.OfferQuoteApi.as_view(), name="api-catalog-offer-quote"),
    path(
        "catalog/rights/<alc:allocation_id>/approve",
        api.AllocationApproveApi.as_view(),
        name="api-catalog-rights-approve",
    ),
    path(
        "catalog/rights/<alc:allocation_id>/reject",
        api.AllocationRejectApi.as_view(),
        name="api-catalog-rights-reject",
    ),
]
