"""OpenAPI: every operation declares its problem+json error responses, and reads like a guide.

Descriptions, tags and request examples come from ``common/api/schema_docs.py`` (or the view's
own ``extend_schema``); a docstring inherited from a base view is never used.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, inline_serializer
from rest_framework import serializers

from common.api.schema_docs import operation_doc

FieldErrorSerializer = inline_serializer(
    name="FieldError",
    fields={
        "pointer": serializers.CharField(help_text="JSON pointer into the request body"),
        "code": serializers.CharField(),
        "detail": serializers.CharField(),
    },
)

ProblemSerializer = inline_serializer(
    name="Problem",
    fields={
        "type": serializers.URLField(),
        "title": serializers.CharField(),
        "status": serializers.IntegerField(),
        "detail": serializers.CharField(),
        "code": serializers.CharField(help_text="Stable machine-readable error code"),
        "errors": FieldErrorSerializer.__class__(many=True),
    },
)

ERROR_DESCRIPTIONS = {
    400: "The request body could not be parsed.",
    401: "Missing, unknown, revoked or expired credentials.",
    403: "Authenticated, but the role or token scope does not allow this.",
    404: "No such object, or it belongs to another organisation.",
    409: "Conflicts with the current state.",
    413: "The request is too large.",
    415: "Unsupported media type or file format.",
    422: "Invalid content or a broken business rule; see errors[].",
    429: "Rate limited; see Retry-After.",
}


class ProblemAutoSchema(AutoSchema):
    """Adds the error contract to each operation; views may extend with ``problem_statuses``."""

    def get_description(self) -> str:  # type: ignore[override]
        doc = operation_doc(self.view, self.method)
        if doc is not None:
            return doc.description
        # Only what the concrete view says itself: drf-spectacular's default walks the MRO and
        # would show a base class's docstring ("Base for paginated list endpoints...").
        handler = type(self.view).__dict__.get(self.method.lower())
        own = (handler.__doc__ if handler is not None else None) or type(self.view).__dict__.get("__doc__")
        return inspect.cleandoc(own) if own else ""

    def get_summary(self) -> str | None:
        doc = operation_doc(self.view, self.method)
        return doc.summary or None if doc is not None else None

    def get_tags(self) -> list[str]:
        doc = operation_doc(self.view, self.method)
        if doc is None:
            return super().get_tags()
        return [doc.tag, *doc.extra_tags]

    def get_examples(self) -> list[OpenApiExample]:
        doc = operation_doc(self.view, self.method)
        if doc is None or doc.example is None:
            return []
        # A string example is a binary body (a part, an archive); the rest are JSON.
        media_type = "application/octet-stream" if isinstance(doc.example, str) else "application/json"
        return [OpenApiExample("Example", value=doc.example, request_only=True, media_type=media_type)]

    def _get_response_bodies(self, direction: Literal["request", "response"] = "response") -> dict[str, Any]:
        responses: dict[str, Any] = super()._get_response_bodies(direction)
        statuses = {400, 401, 403, 404, 429}
        if self.method in ("POST", "PUT", "PATCH"):
            statuses |= {415, 422}
        statuses |= set(getattr(self.view, "problem_statuses", ()))
        for status in sorted(statuses):
            if str(status) in responses:
                continue
            response = OpenApiResponse(ProblemSerializer, description=ERROR_DESCRIPTIONS[status])
            responses[str(status)] = self._get_response_for_code(
                response, str(status), media_types=["application/problem+json"]
            )
        return responses

    def _get_serializer_name(self, serializer: Any, direction: str, bypass_extensions: bool = False) -> str:
        # Views nest their serializers (``TokenListCreateApi.InputSerializer``), so
        # the plain class name collides across views: name them by the view.
        name: str = super()._get_serializer_name(serializer, direction, bypass_extensions)
        cls = serializer if isinstance(serializer, type) else type(serializer)
        qualname = cls.__qualname__
        if "." in qualname and "<locals>" not in qualname:
            owner, _, inner = qualname.rpartition(".")
            base = owner.replace(".", "") + inner.removesuffix("Serializer")
            if direction == "request" and name.endswith("Request"):
                return base + "Request"
            return base
        return name


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "common.authentication.ApiTokenAuthentication"
    name = "ApiToken"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "bearerFormat": "srk_<prefix>_<secret>"}
