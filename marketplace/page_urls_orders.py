"""Portal pages (page_urls_orders), in the ``marketplace`` namespace."""

from django.urls import URLPattern, path  # noqa: F401

urlpatterns: list[URLPattern] = []
