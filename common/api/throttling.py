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
