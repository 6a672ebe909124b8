"""Marketplace API routes under /api/v1/: the catalog's and the orders' (each in its own module)."""

from django.urls import URLResolver, include, path

urlpatterns: list[URLResolver] = [
    path("", include("marketplace.urls_catalog")),
    path("", include("marketplace.urls_orders")),
    path("", include("marketplace.urls_models")),
]
