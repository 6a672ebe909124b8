"""Bearer-token authentication for the API.

Tokens look like ``srk_<prefix>_<secret>``; only the SHA-256 of the whole
string is stored, so a database leak does not leak usable tokens. A revoked
or expired token, or one whose user left the organisation, answers 401.
"""

from __future__ import annotations

import hashlib

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from common.models import ApiToken, Membership, User

TOKEN_PREFIX = "srk_"  # noqa: S105 - a public marker, not a secret


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


class TokenRejected(exceptions.AuthenticationFailed):
    def __init__(self, detail: str, problem_code: str) -> None:
        super().__init__(detail)
        self.problem_code = problem_code


class ApiTokenAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request: Request) -> tuple[User, ApiToken] | None:
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword:
            return None
        if len(parts) != 2:
            raise TokenRejected(
                "The Authorization header must be 'Bearer <token>'.", "common.token_malformed"
            )
        try:
            raw = parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise TokenRejected("The token is not ASCII.", "common.token_malformed") from None
        if not raw.startswith(TOKEN_PREFIX):
            raise TokenRejected("This is not a Sealroom API token.", "common.token_malformed")
        token = (
            ApiToken.objects.select_related("user", "organisation")
            .filter(secret_hash=token_hash(raw))
            .first()
        )
        if token is None:
            raise TokenRejected("Unknown API token.", "common.token_unknown")
        now = timezone.now()
        if token.revoked_at is not None:
            raise TokenRejected("This API token was revoked.", "common.token_revoked")
        if token.expires_at <= now:
            raise TokenRejected("This API token has expired.", "common.token_expired")
        if not token.user.is_active:
            raise TokenRejected("This user is deactivated.", "common.user_inactive")
        if not Membership.objects.filter(user=token.user, organisation=token.organisation).exists():
            raise TokenRejected(
                "The token's user is no longer a member of its organisation.",
                "common.token_orphaned",
            )
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'
