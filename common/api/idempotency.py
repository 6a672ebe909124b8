"""``Idempotency-Key`` on API endpoints that create something or move money.

One machinery (``common.idempotency``) behind every such endpoint. Orders
require the header; the other creating endpoints accept it: when it is sent,
a retry with the same key and body replays the first response (same status,
same body) instead of creating a second object; the same key with another
body or on another object answers 422 ``idempotency.key_reused``.

``idempotent_post("tokens.create")`` decorates a view's ``post``; it also
declares the header in the OpenAPI schema.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from common.idempotency import idempotent
from common.permissions import acting_organisation_required

REQUIRED_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=True,
    description=(
        "A unique key per request (8-200 characters: letters, digits, '.', '_', ':', '-'), kept 24 hours "
        "per organisation and endpoint. A retry with the same key and body replays the first response; "
        "the same key with another body answers 422 idempotency.key_reused."
    ),
)

OPTIONAL_HEADER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    required=False,
    description=(
        "Recommended: a unique key per request (8-200 characters), kept 24 hours per organisation and "
        "endpoint. A retry with the same key and body replays the first response instead of creating "
        "a second object; the same key with another body answers 422 idempotency.key_reused."
    ),
)

View = Any
Handler = Callable[..., Response]


def idempotent_response(
    request: Request,
    *,
    endpoint: str,
    body: Any,
    run: Callable[[str], tuple[int, Any]],
    required: bool = False,
) -> Response:
    """Run ``run`` once per Idempotency-Key (or plainly, when no key is sent and none is required).

    :raises IdempotencyKeyInvalid: the key is required and missing, or malformed.
    :raises IdempotencyKeyMismatch: the key was used with another body.
    :raises IdempotencyInProgress: the first request with the key has not finished.
    """
    key = request.headers.get("Idempotency-Key")
    if key is None and not required:
        status, data = run("")
        return Response(data, status=status)
    result = idempotent(
        organisation=acting_organisation_required(request),
        endpoint=endpoint,
        key=key,
        body=body,
        run=run,
    )
    return Response(result.body, status=result.status)


def idempotent_post(endpoint: str) -> Callable[[Handler], Handler]:
    """Make a view's ``post`` honour an optional Idempotency-Key (scoped to the acting organisation).

    The digest covers the path (so a key cannot be replayed onto another object) and the JSON body.
    """

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        def post(self: View, request: Request, *args: Any, **kwargs: Any) -> Response:
            fresh: list[Response] = []

            def run(_scoped_key: str) -> tuple[int, Any]:
                response = handler(self, request, *args, **kwargs)
                fresh.append(response)
                return response.status_code, response.data

            answer = idempotent_response(
                request, endpoint=endpoint, body={"path": request.path, "body": request.data}, run=run
            )
            # The first time, the view's own response (with its headers); later, the stored replay.
            return fresh[0] if fresh else answer

        return extend_schema(parameters=[OPTIONAL_HEADER])(post)

    return decorate
