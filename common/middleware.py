"""Middleware that keeps the error contract outside DRF views too."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from common.api.problems import django_problem, is_api_request

logger = logging.getLogger(__name__)


class ProblemJsonMiddleware:
    """Under /api/, answer unrouted paths and unhandled errors with problem+json."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if (
            is_api_request(request)
            and response.status_code == 404
            and not response.get("Content-Type", "").startswith("application/problem+json")
        ):
            return django_problem(404, "not_found", f"No API endpoint at {request.path}.")
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_api_request(request):
            return None
        logger.exception("unhandled error", exc_info=exception)
        return django_problem(500, "server_error", "Something went wrong on our side.")
