"""Error pages (the other pages live in common/pages/)."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

from common.api.problems import PROBLEM_CONTENT_TYPE, body_too_large_problem, django_problem, is_api_request


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """400, or 413 when Django refused a body past ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (a form post too)."""
    if isinstance(exception, RequestDataTooBig):
        if is_api_request(request):
            return JsonResponse(body_too_large_problem(), status=413, content_type=PROBLEM_CONTENT_TYPE)
        return render(request, "errors/413.html", status=413)
    if is_api_request(request):
        return django_problem(400, "malformed_request", "The request could not be understood.")
    return render(request, "400.html", status=400)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if is_api_request(request):
        return django_problem(404, "not_found", f"No API endpoint at {request.path}.")
    return render(request, "errors/404.html", status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    if is_api_request(request):
        return django_problem(500, "server_error", "Something went wrong on our side.")
    return render(request, "errors/500.html", status=500)
