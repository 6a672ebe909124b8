"""Which of the user's organisations a custody page acts through, and what its role allows."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest

from common.models import Membership, Role
from common.pages.helpers import page_user
from common.permissions import role_at_least
from custody import selectors
from custody.exceptions import NotFound
from custody.models import Dataset, DatasetVersion


def memberships_current_first(request: HttpRequest) -> list[Membership]:
    """The user's memberships, the one the session acts for first (then by name, as the header)."""
    user = page_user(request)
    memberships = list(
        Membership.objects.select_related("organisation").filter(user=user).order_by("organisation__name")
    )
    current_id = request.session.get("org_id")
    memberships.sort(key=lambda m: m.organisation_id != current_id)
    return memberships


def current_membership(request: HttpRequest) -> Membership | None:
    """The membership the user acts through now (the header's "Acting for")."""
    memberships = memberships_current_first(request)
    return memberships[0] if memberships else None


def require_role(membership: Membership, needed: str, what: str) -> None:
    """:raises PermissionDenied: the role is below ``needed`` (the page answers 403)."""
    if not role_at_least(membership.role, needed):
        raise PermissionDenied(
            f"Only {needed}s and above of {membership.organisation.name} may {what}; "
            f"you are {membership.get_role_display().lower()}."
        )


def can_act(membership: Membership) -> bool:
    return role_at_least(membership.role, Role.MEMBER)


def dataset_for(request: HttpRequest, dataset_id: int) -> tuple[Dataset, Membership]:
    """A dataset owned by one of the user's organisations. :raises Http404: any other."""
    for membership in memberships_current_first(request):
        try:
            dataset = selectors.dataset_get_for_org(
                organisation=membership.organisation, dataset_id=dataset_id
            )
        except NotFound:
            continue
        return dataset, membership
    raise Http404("No such dataset.")


@dataclass(frozen=True)
class VersionAccess:
    version: DatasetVersion
    membership: Membership
    # The page's organisation owns the dataset (else it only contributes to this version).
    is_owner: bool
    # The organisation the session acts for (the API uses it) is the page's organisation.
    acting: bool

    @property
    def can_act(self) -> bool:
        return can_act(self.membership)


def version_for(request: HttpRequest, version_id: int, *, owner_only: bool = False) -> VersionAccess:
    """A version one of the user's organisations owns (preferred) or contributes to.

    :raises Http404: none of them may see it (or, with ``owner_only``, none owns it).
    """
    memberships = memberships_current_first(request)
    found: VersionAccess | None = None
    for index, membership in enumerate(memberships):
        try:
            version = selectors.version_get_for_org(
                organisation=membership.organisation, version_id=version_id, owner_only=owner_only
            )
        except NotFound:
            continue
        access = VersionAccess(
            version=version,
            membership=membership,
            is_owner=version.dataset.owner_id == membership.organisation_id,
            acting=index == 0,
        )
        if access.is_owner:
            return access
        found = found or access
    if found is None:
        raise Http404("No such dataset version.")
    return found


def owner_version_for(request: HttpRequest, version_id: int) -> VersionAccess:
    """As ``version_for``, for actions only the owning organisation takes."""
    return version_for(request, version_id, owner_only=True)
