"""The one place that turns errors into ``application/problem+json`` (RFC 9457).

Body: ``type``, ``title``, ``status``, ``detail``, a stable ``code`` and
``errors: [{pointer, code, detail}]`` for field errors. Statuses: 400
unparseable, 401, 403, 404, 405, 406, 409, 413, 415, 422, 429, 500 (never
with a stack trace).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

from common import exceptions as domain

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_BASE = "https://sealroom.example/problems/"

DOMAIN_STATUS: dict[type[domain.DomainError], int] = {
    domain.NotFound: 404,
    domain.NotPermitted: 403,
    domain.Conflict: 409,
    domain.Invalid: 422,
    domain.TooLarge: 413,
    domain.UnsupportedFormat: 415,
}

TITLES = {
    400: "Bad request",
    401: "Not authenticated",
    403: "Not permitted",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    413: "Too large",
    415: "Unsupported media type",
    422: "Invalid content",
    429: "Rate limited",
    500: "Server error",
}


def problem(
    status: int,
    code: str,
    detail: str,
    errors: Sequence[Mapping[str, str]] | Sequence[domain.FieldError] = (),
    title: str | None = None,
) -> dict[str, Any]:
    return {
        "type": TYPE_BASE + code,
        "title": title or TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        "errors": [dict(e) for e in errors],
    }


def problem_response(body: dict[str, Any], headers: Mapping[str, str] | None = None) -> Response:
    response = Response(body, status=body["status"], content_type=PROBLEM_CONTENT_TYPE)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def django_problem(status: int, code: str, detail: str) -> JsonResponse:
    """A problem+json response outside DRF (Django's 404/500 handlers, middleware)."""
    return JsonResponse(problem(status, code, detail), status=status, content_type=PROBLEM_CONTENT_TYPE)


def body_too_large_problem() -> dict[str, Any]:
    """The 413 for a body past ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (Django refuses it before any parser)."""
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return problem(413, "common.body_too_large", f"The request body is larger than {limit} bytes.")


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


def flatten_validation(detail: Any, pointer: str = "") -> list[dict[str, str]]:
    """Turn DRF's nested ``ValidationError.detail`` into JSON-pointer field errors."""
    if isinstance(detail, Mapping):
        out: list[dict[str, str]] = []
        for key, value in detail.items():
            sub = pointer if key in ("non_field_errors", "__all__") else f"{pointer}/{_escape(str(key))}"
            out.extend(flatten_validation(value, sub))
        return out
    if isinstance(detail, list):
        if all(isinstance(item, (str, drf.ErrorDetail)) for item in detail):
            return [_field_error(pointer, item) for item in detail]
        out = []
        for index, item in enumerate(detail):
            if item:
                out.extend(flatten_validation(item, f"{pointer}/{index}"))
        return out
    return [_field_error(pointer, detail)]


def _field_error(pointer: str, item: Any) -> dict[str, str]:
    code = getattr(item, "code", None) or "invalid"
    return {"pointer": pointer or "/", "code": str(code), "detail": str(item)}


def _drf_problem(exc: drf.APIException) -> tuple[dict[str, Any], dict[str, str]]:
    headers: dict[str, str] = {}
    if isinstance(exc, drf.ValidationError):
        errors = flatten_validation(exc.detail)
        first = errors[0]["detail"] if errors else "The request is invalid."
        where = f" at {errors[0]['pointer']}" if errors else ""
        return problem(422, "validation_error", f"{first}{where}", errors), headers
    if isinstance(exc, drf.ParseError):
        code = getattr(exc, "problem_code", None) or "malformed_request"
        return problem(400, code, str(exc.detail)), headers
    if isinstance(exc, (drf.NotAuthenticated, drf.AuthenticationFailed)):
        code = getattr(exc, "problem_code", None) or (
            "not_authenticated" if isinstance(exc, drf.NotAuthenticated) else "authentication_failed"
        )
        headers["WWW-Authenticate"] = 'Bearer realm="api"'
        return problem(401, code, str(exc.detail)), headers
    if isinstance(exc, drf.PermissionDenied):
        code = getattr(exc, "problem_code", None) or "not_permitted"
        return problem(403, code, str(exc.detail)), headers
    if isinstance(exc, drf.NotFound):
        return problem(404, "not_found", str(exc.detail)), headers
    if isinstance(exc, drf.MethodNotAllowed):
        return problem(405, "method_not_allowed", str(exc.detail)), headers
    if isinstance(exc, drf.NotAcceptable):
        return problem(406, "not_acceptable", str(exc.detail)), headers
    if isinstance(exc, drf.UnsupportedMediaType):
        return problem(415, "unsupported_media_type", str(exc.detail)), headers
    if isinstance(exc, drf.Throttled):
        wait = getattr(exc, "wait", None)
        if wait is not None:
            headers["Retry-After"] = str(int(wait) + 1)
        return problem(429, "rate_limited", str(exc.detail)), headers
    status = exc.status_code
    return problem(status, str(exc.default_code), str(exc.detail)), headers


def exception_handler(exc: Exception, context: Mapping[str, Any]) -> Response:
    """DRF's exception handler: every error becomes problem+json."""
    if isinstance(exc, domain.DomainError):
        status = next((s for cls, s in DOMAIN_STATUS.items() if isinstance(exc, cls)), 422)
        body = problem(status, exc.code, exc.detail, list(exc.errors), title=exc.title)
        return problem_response(body)
    if isinstance(exc, Http404):
        return problem_response(problem(404, "not_found", "Not found."))
    if isinstance(exc, RequestDataTooBig):
        return problem_response(body_too_large_problem())
    if isinstance(exc, DjangoPermissionDenied):
        return problem_response(problem(403, "not_permitted", "You may not do this."))
    if isinstance(exc, drf.APIException):
        body, headers = _drf_problem(exc)
        return problem_response(body, headers)
    logger.exception("unhandled error in API view", exc_info=exc)
    return problem_response(problem(500, "server_error", "Something went wrong on our side."))


def is_api_request(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")
