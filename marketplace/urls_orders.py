"""API routes (urls_orders)."""

from django.urls import URLPattern, path  # noqa: F401

urlpatterns: list[URLPattern] = []
