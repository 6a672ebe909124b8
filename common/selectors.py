"""Reads for people, organisations and tokens. Everything is scoped to the caller."""

from __future__ import annotations

from django.db.models import QuerySet

from common.exceptions import NotFound
from common.models import ApiToken, Invitation, Membership, Organisation, User

# The largest primary key a 64-bit signed column can hold.
MAX_ID = 2**63 - 1


def membership_get(*, user: User, organisation_id: int) -> Membership:
    """The user's membership in an organisation.

    :raises NotFound: not a member (another organisation's objects answer 404).
    """
    if not 0 < organisation_id <= MAX_ID:
        # SQLite raises OverflowError on a foreign-key lookup past 64 bits; no such row anyway.
        raise NotFound("No such organisation.", code="common.organisation_not_found")
    membership = (
        Membership.objects.select_related("organisation")
        .filter(user=user, organisation_id=organisation_id)
        .first()
    )
    if membership is None:
        raise NotFound("No such organisation.", code="common.organisation_not_found")
    return membership


def membership_list_for_user(*, user: User) -> QuerySet[Membership]:
    return Membership.objects.select_related("organisation").filter(user=user).order_by("organisation__name")


def member_list(*, organisation: Organisation) -> QuerySet[Membership]:
    return (
        Membership.objects.select_related("user").filter(organisation=organisation).order_by("user__username")
    )


def member_get(*, organisation: Organisation, membership_id: int) -> Membership:
    membership = (
        Membership.objects.select_related("user", "organisation")
        .filter(organisation=organisation, pk=membership_id)
        .first()
    )
    if membership is None:
        raise NotFound("No such member.", code="common.member_not_found")
    return membership


def invitation_list(*, organisation: Organisation) -> QuerySet[Invitation]:
    return (
        Invitation.objects.select_related("invited_by")
        .filter(organisation=organisation)
        .order_by("-created_at")
    )


def token_list_for_user(*, user: User, organisation: Organisation | None = None) -> QuerySet[ApiToken]:
    qs = ApiToken.objects.select_related("organisation").filter(user=user)
    if organisation is not None:
        qs = qs.filter(organisation=organisation)
    return qs.order_by("-created_at")


def token_get_for_user(*, user: User, token_id: int) -> ApiToken:
    """A token the user owns, or one in an organisation the user belongs to.

    :raises NotFound: anything else.
    """
    token = ApiToken.objects.select_related("organisation").filter(pk=token_id).first()
    if token is None or not (
        token.user_id == user.pk
        or Membership.objects.filter(user=user, organisation_id=token.organisation_id).exists()
    ):
        raise NotFound("No such token.", code="common.token_not_found")
    return token
