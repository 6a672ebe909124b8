"""Who may do what: organisation roles, platform roles and token scopes.

The action x role table is ``docs/permissions.md``; views declare what they
need with ``required_scope`` and ``required_role`` and these checks enforce it.
Another organisation's object answers 404 (selectors filter by organisation);
the right organisation with the wrong role answers 403.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

from common.models import ApiToken, Membership, Organisation, Role, Scope

ROLE_RANK = {Role.VIEWER: 1, Role.MEMBER: 2, Role.ADMIN: 3}


def role_at_least(role: str | None, needed: str) -> bool:
    return role is not None and ROLE_RANK.get(Role(role), 0) >= ROLE_RANK[Role(needed)]


class Forbidden(PermissionDenied):
    def __init__(self, detail: str, problem_code: str) -> None:
        super().__init__(detail)
        self.problem_code = problem_code


def acting_membership(request: Request) -> Membership | None:
    """The membership the request acts through: the token's organisation, else the session's."""
    if hasattr(request, "_sealroom_membership"):
        cached: Membership | None = request._sealroom_membership
        return cached
    user = request.user
    membership: Membership | None = None
    if user and user.is_authenticated:
        token = request.auth if isinstance(request.auth, ApiToken) else None
        qs = Membership.objects.select_related("organisation").filter(user=user)
        if token is not None:
            membership = qs.filter(organisation_id=token.organisation_id).first()
        else:
            org_id = request.session.get("org_id") if hasattr(request, "session") else None
            membership = (qs.filter(organisation_id=org_id).first() if org_id else None) or qs.order_by(
                "organisation__name"
            ).first()
    setattr(request, "_sealroom_membership", membership)  # noqa: B010 - per-request cache
    return membership


def acting_organisation(request: Request) -> Organisation | None:
    membership = acting_membership(request)
    return membership.organisation if membership else None


def acting_organisation_required(request: Request) -> Organisation:
    """The acting organisation. :raises Forbidden: the caller belongs to none."""
    organisation = acting_organisation(request)
    if organisation is None:
        raise Forbidden("You are not a member of any organisation.", "common.no_organisation")
    return organisation


SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Any one of these lets a token act (a change that belongs to no narrower scope: marking
# notifications read). ``read`` alone never changes anything.
ANY_WRITE_SCOPE = (Scope.PROVIDE, Scope.ORDER, Scope.TRAIN, Scope.ADMIN)


class ScopeRequired(BasePermission):
    """Token requests need the view's ``required_scope(s)``: a scope, or a tuple of which any one will do.

    Safe methods default to ``read``. A method that changes something and
    declares no scope is refused to every token (a session may still use it),
    and ``read`` is never enough for one: ``read`` means read.
    """

    def has_permission(self, request: Request, view: APIView) -> bool:
        token = request.auth if isinstance(request.auth, ApiToken) else None
        if token is None:
            return True
        needed = _required_scopes(request, view)
        # A method the view lacks is left to answer 405.
        if request.method not in SAFE_METHODS and hasattr(view, str(request.method).lower()):
            needed = tuple(scope for scope in needed if scope != Scope.READ)
            if not needed:
                raise Forbidden(
                    "API tokens may not do this; sign in to the portal instead.", "common.token_scope_missing"
                )
        if needed and not any(token.has_scope(scope) for scope in needed):
            names = "' or '".join(needed)
            raise Forbidden(f"This API token lacks the '{names}' scope.", "common.token_scope_missing")
        return True


def _required_scopes(request: Request, view: APIView) -> tuple[str, ...]:
    scopes: Any = getattr(view, "required_scopes", None)
    declared: Any = (
        scopes.get(request.method) if isinstance(scopes, dict) else getattr(view, "required_scope", None)
    )
    if declared is None:
        return (Scope.READ,) if request.method in SAFE_METHODS else ()
    return tuple(declared) if isinstance(declared, tuple) else (declared,)


class OrgRoleRequired(BasePermission):
    """The acting membership has at least the view's ``required_role`` for this method."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        roles: Any = getattr(view, "required_roles", None)
        needed = (
            roles.get(request.method) if isinstance(roles, dict) else getattr(view, "required_role", None)
        )
        if needed is None:
            return True
        membership = acting_membership(request)
        if membership is None:
            raise Forbidden("You are not a member of any organisation.", "common.no_organisation")
        if not role_at_least(membership.role, needed):
            raise Forbidden(
                f"This needs the '{needed}' role in {membership.organisation.name}.",
                "common.role_insufficient",
            )
        return True


class PlatformStaffRequired(BasePermission):
    """Operators and auditors read; only operators act."""

    def has_permission(self, request: Request, view: APIView) -> bool:
        user = request.user
        if not user or not user.is_authenticated or not user.is_platform_staff:
            raise Forbidden("This is for platform operators and auditors.", "common.staff_only")
        if request.method not in ("GET", "HEAD", "OPTIONS") and not user.is_operator:
            raise Forbidden("Auditors have read-only access.", "common.operator_only")
        return True
