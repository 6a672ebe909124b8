"""Per-token request throttling (session users are throttled per user)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

if TYPE_CHECKING:
    from rest_framework.views import APIView


class TokenRateThrottle(SimpleRateThrottle):
    scope = "token"

    def get_cache_key(self, request: Request, view: APIView) -> str | None:
        if not request.user or not request.user.is_authenticated:
            return None
        token = getattr(request, "auth", None)
        ident = f"t{token.pk}" if token is not None and hasattr(token, "pk") else f"u{request.user.pk}"
        return self.cache_format % {"scope": self.scope, "ident": ident}


class InferenceRateThrottle(TokenRateThrottle):
    """A separate, lower rate for the plug-in inference POSTs (``/models/{id}/generate``,
    ``/classify``), per API token (per user for a session): each call queues sandboxed model work,
    so it is limited well below the general ``token`` rate. Reads (polling a call) are not counted
    here. Rate: ``SEALROOM_THROTTLE_INFERENCE`` (scope ``inference``)."""

    scope = "inference"

    def allow_request(self, request: Request, view: APIView) -> bool:
        if request.method != "POST":
            return True
        return super().allow_request(request, view)
