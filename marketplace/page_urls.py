"""Marketplace pages under /market/, in the ``marketplace`` namespace."""

from django.urls import URLPattern, URLResolver

from marketplace import page_urls_catalog, page_urls_orders

app_name = "marketplace"

urlpatterns: list[URLPattern | URLResolver] = [
    *page_urls_catalog.urlpatterns,
    *page_urls_orders.urlpatterns,
]
