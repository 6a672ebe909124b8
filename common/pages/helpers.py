"""What the page modules share: the signed-in user, safe redirects, domain errors as HTTP."""

from __future__ import annotations

from typing import NoReturn

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from django.shortcuts import resolve_url
from django.utils.http import url_has_allowed_host_and_scheme

from common.exceptions import DomainError, NotFound, NotPermitted
from common.models import Membership, Role, User
from common.permissions import role_at_least
from common.selectors import membership_get


def page_user(request: HttpRequest) -> User:
    """The signed-in user (pages behind ``signed_in`` only)."""
    user = request.user
    if not isinstance(user, User):
        raise TypeError("page_user needs a signed-in request")
    return user


def safe_next(request: HttpRequest, candidate: str | None) -> str:
    """``candidate`` if it is a path on this site, else the dashboard."""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return home_url()


def home_url() -> str:
    """The signed-in landing page: the portal's dashboard.

    Named through ``LOGIN_REDIRECT_URL`` because common sits below the portal
    and knows none of its routes.
    """
    return resolve_url(settings.LOGIN_REDIRECT_URL)


def raise_http(error: DomainError) -> NoReturn:
    """Re-raise a domain error as the page's 404 or 403; anything else as it is."""
    if isinstance(error, NotFound):
        raise Http404(error.detail) from error
    if isinstance(error, NotPermitted):
        raise PermissionDenied(error.detail) from error
    raise error


def membership_or_404(user: User, org_id: int) -> Membership:
    """The user's membership in the organisation; another organisation is a 404."""
    try:
        return membership_get(user=user, organisation_id=org_id)
    except NotFound as exc:
        raise_http(exc)


def admin_membership_or_403(user: User, org_id: int) -> Membership:
    """As ``membership_or_404``, and the role must be admin (else 403)."""
    membership = membership_or_404(user, org_id)
    if not role_at_least(membership.role, Role.ADMIN):
        raise PermissionDenied(f"Only admins of {membership.organisation.name} manage its members.")
    return membership
