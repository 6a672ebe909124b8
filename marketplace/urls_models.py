"""Model listings API routes (issue 16) under /api/v1/models/listings."""

from django.urls import URLPattern, path

from marketplace import api_model_listings as api

urlpatterns: list[URLPattern] = [
    path("models/listings", api.ModelListingListCreateApi.as_view(), name="api-models-listings"),
    path("models/listings/<lst:listing_id>", api.ModelListingDetailApi.as_view(), name="api-models-listing"),
    path(
        "models/listings/<lst:listing_id>/licenses",
        api.ModelLicenseBuyApi.as_view(),
        name="api-models-licenses",
    ),
]
