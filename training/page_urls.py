"""Training pages under /training/, in the ``training`` namespace."""

from django.urls import URLPattern, path  # noqa: F401

app_name = "training"

urlpatterns: list[URLPattern] = []
