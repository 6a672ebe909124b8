"""Error pages (the other pages live in common/pages/)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from common.api.problems import django_problem, is_api_request


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return django_problem(404, "not_found", f"No API endpoint at {request.path}.")
    return render(request, "errors/404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if is_api_request(request):
        return django_problem(500, "server_error", "Something went wrong on our side.")
    return render(request, "errors/500.html", status=500)
