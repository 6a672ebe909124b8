"""Training API routes under /api/v1/."""

from django.urls import URLPattern, path  # noqa: F401

urlpatterns: list[URLPattern] = []
