"""Writes for people, organisations, memberships and API tokens."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from common.audit import audit_record
from common.authentication import TOKEN_PREFIX, token_hash
from common.exceptions import Conflict, FieldError, Invalid, NotFound, NotPermitted
from common.models import (
    ApiToken,
    Invitation,
    LoginThrottle,
    Membership,
    Organisation,
    Role,
    Scope,
    User,
)
from common.permissions import role_at_least


def _password_errors(password: str, user: User | None = None) -> list[str]:
    try:
        validate_password(password, user)
    except ValidationError as exc:
        return list(exc.messages)
    return []


@transaction.atomic
def organisation_signup(
    *,
    username: str,
    email: str,
    password: str,
    organisation_name: str,
    is_provider: bool,
    is_trainer: bool,
) -> tuple[User, Organisation]:
    """Create a user and a new organisation with that user as its admin.

    :raises Invalid: a field is missing, taken or too weak (with pointers).
    """
    errors: list[FieldError] = []
    username = username.strip()
    email = email.strip().lower()
    organisation_name = organisation_name.strip()
    if not username:
        errors.append({"pointer": "/username", "code": "required", "detail": "A username is required."})
    elif User.objects.filter(username__iexact=username).exists():
        errors.append({"pointer": "/username", "code": "taken", "detail": "This username is taken."})
    if not email or "@" not in email:
        errors.append({"pointer": "/email", "code": "invalid", "detail": "Enter a valid e-mail address."})
    elif User.objects.filter(email__iexact=email).exists():
        errors.append({"pointer": "/email", "code": "taken", "detail": "This e-mail is already registered."})
    slug = slugify(organisation_name)[:64]
    if not organisation_name or not slug:
        errors.append(
            {"pointer": "/organisation_name", "code": "required", "detail": "Name your organisation."}
        )
    elif (
        Organisation.objects.filter(slug=slug).exists()
        or Organisation.objects.filter(name__iexact=organisation_name).exists()
    ):
        errors.append(
            {"pointer": "/organisation_name", "code": "taken", "detail": "This organisation name is taken."}
        )
    if not (is_provider or is_trainer):
        errors.append({"pointer": "/kind", "code": "required", "detail": "Choose provider, trainer or both."})
    candidate = User(username=username, email=email)
    for message in _password_errors(password, candidate):
        errors.append({"pointer": "/password", "code": "weak", "detail": message})
    if errors:
        raise Invalid(errors[0]["detail"], code="common.signup_invalid", errors=errors)
    try:
        user = User.objects.create_user(username=username, email=email, password=password)
        org = Organisation.objects.create(
            name=organisation_name, slug=slug, is_provider=is_provider, is_trainer=is_trainer
        )
    except IntegrityError:
        raise Conflict(
            "That username, e-mail or organisation was taken a moment ago.", code="common.signup_race"
        ) from None
    Membership.objects.create(user=user, organisation=org, role=Role.ADMIN)
    audit_record(
        action="account.signup",
        actor=user,
        organisation=org,
        object_type="organisation",
        object_id=org.pk,
        details={"kind": org.kind_label},
    )
    return user, org


def _require_admin(actor: User, organisation: Organisation) -> Membership:
    membership = Membership.objects.filter(user=actor, organisation=organisation).first()
    if membership is None:
        raise NotFound("No such organisation.", code="common.organisation_not_found")
    if not role_at_least(membership.role, Role.ADMIN):
        raise NotPermitted(
            "Only admins of this organisation manage its members.", code="common.role_insufficient"
        )
    return membership


@transaction.atomic
def invitation_create(
    *, actor: User, organisation: Organisation, email: str, role: str
) -> tuple[Invitation, str]:
    """Invite someone by e-mail; returns the invitation and its one-time secret.

    :raises NotPermitted: the actor is not an admin of the organisation.
    :raises Invalid: bad e-mail or role.
    """
    _require_admin(actor, organisation)
    email = email.strip().lower()
    if not email or "@" not in email:
        raise Invalid(
            "Enter a valid e-mail address.",
            code="common.invitation_invalid",
            errors=[{"pointer": "/email", "code": "invalid", "detail": "Enter a valid e-mail address."}],
        )
    if role not in Role.values:
        raise Invalid(
            f"Role must be one of {', '.join(Role.values)}.",
            code="common.invitation_invalid",
            errors=[{"pointer": "/role", "code": "invalid_choice", "detail": "Unknown role."}],
        )
    if Membership.objects.filter(organisation=organisation, user__email__iexact=email).exists():
        raise Conflict("That person is already a member.", code="common.already_member")
    raw = secrets.token_urlsafe(32)
    invitation = Invitation.objects.create(
        organisation=organisation,
        email=email,
        role=role,
        token_hash=hashlib.sha256(raw.encode()).hexdigest(),
        invited_by=actor,
        expires_at=timezone.now() + timedelta(days=settings.INVITATION_DAYS),
    )
    audit_record(
        action="membership.invite",
        actor=actor,
        organisation=organisation,
        object_type="invitation",
        object_id=invitation.pk,
        details={"email": email, "role": role},
    )
    link = f"{settings.SEALROOM_BASE_URL}/invitations/{raw}/"
    transaction.on_commit(
        lambda: send_mail(
            f"You are invited to {organisation.name} on Sealroom",
            f"{actor.get_username()} invited you to join {organisation.name} as {role}.\n"
            f"Accept within {settings.INVITATION_DAYS} days: {link}\n",
            None,
            [email],
        )
    )
    return invitation, raw


@transaction.atomic
def invitation_accept(*, raw_token: str, user: User) -> Membership:
    """Join the organisation named by an open invitation.

    :raises NotFound: unknown token. :raises Conflict: used, revoked or expired.
    """
    digest = hashlib.sha256(raw_token.encode()).hexdigest()
    invitation = (
        Invitation.objects.select_for_update(of=("self",))
        .select_related("organisation")
        .filter(token_hash=digest)
        .first()
    )
    if invitation is None:
        raise NotFound("No such invitation.", code="common.invitation_not_found")
    if not invitation.is_open:
        raise Conflict("This invitation is used, revoked or expired.", code="common.invitation_closed")
    if invitation.email.lower() != user.email.lower():
        raise NotPermitted(
            "This invitation was sent to another e-mail address.", code="common.invitation_other_email"
        )
    membership, _created = Membership.objects.get_or_create(
        user=user, organisation=invitation.organisation, defaults={"role": invitation.role}
    )
    invitation.accepted_at = timezone.now()
    invitation.accepted_by = user
    invitation.save(update_fields=["accepted_at", "accepted_by"])
    audit_record(
        action="membership.join",
        actor=user,
        organisation=invitation.organisation,
        object_type="membership",
        object_id=membership.pk,
        details={"role": membership.role, "invitation": invitation.pk},
    )
    return membership


@transaction.atomic
def membership_role_change(*, actor: User, membership: Membership, role: str) -> Membership:
    """Change a member's role; an organisation always keeps at least one admin.

    :raises NotPermitted: actor is not an admin. :raises Conflict: last admin.
    """
    _require_admin(actor, membership.organisation)
    if role not in Role.values:
        raise Invalid(
            f"Role must be one of {', '.join(Role.values)}.",
            code="common.role_invalid",
            errors=[{"pointer": "/role", "code": "invalid_choice", "detail": "Unknown role."}],
        )
    locked = Membership.objects.select_for_update().get(pk=membership.pk)
    if locked.role == Role.ADMIN and role != Role.ADMIN:
        admins = Membership.objects.select_for_update().filter(
            organisation_id=locked.organisation_id, role=Role.ADMIN
        )
        if admins.count() <= 1:
            raise Conflict("An organisation needs at least one admin.", code="common.last_admin")
    old = locked.role
    locked.role = role
    locked.save(update_fields=["role"])
    audit_record(
        action="membership.role_change",
        actor=actor,
        organisation=locked.organisation,
        object_type="membership",
        object_id=locked.pk,
        details={"user": locked.user.get_username(), "from": old, "to": role},
    )
    return locked


@transaction.atomic
def membership_remove(*, actor: User, membership: Membership) -> None:
    """Remove a member and revoke the API tokens they hold for the organisation.

    :raises Conflict: the last admin cannot be removed.
    """
    _require_admin(actor, membership.organisation)
    locked = (
        Membership.objects.select_for_update(of=("self",))
        .select_related("user", "organisation")
        .get(pk=membership.pk)
    )
    if locked.role == Role.ADMIN and (
        Membership.objects.filter(organisation_id=locked.organisation_id, role=Role.ADMIN).count() <= 1
    ):
        raise Conflict("An organisation needs at least one admin.", code="common.last_admin")
    revoked = ApiToken.objects.filter(
        user=locked.user, organisation=locked.organisation, revoked_at__isnull=True
    ).update(revoked_at=timezone.now())
    audit_record(
        action="membership.remove",
        actor=actor,
        organisation=locked.organisation,
        object_type="membership",
        object_id=locked.pk,
        details={"user": locked.user.get_username(), "role": locked.role, "tokens_revoked": revoked},
    )
    locked.delete()


@transaction.atomic
def api_token_create(
    *,
    user: User,
    organisation: Organisation,
    name: str,
    scopes: list[str],
    expires_in_days: int | None = None,
) -> tuple[ApiToken, str]:
    """Create an API token; the secret is returned once and stored only as a hash.

    :raises NotFound: user is not a member. :raises Invalid: bad name, scopes or expiry.
    """
    membership = Membership.objects.filter(user=user, organisation=organisation).first()
    if membership is None:
        raise NotFound("No such organisation.", code="common.organisation_not_found")
    errors: list[FieldError] = []
    name = name.strip()
    if not name or len(name) > 80:
        errors.append({"pointer": "/name", "code": "invalid", "detail": "Name the token (1-80 characters)."})
    unknown = sorted(set(scopes) - set(Scope.values))
    if unknown or not scopes:
        errors.append(
            {
                "pointer": "/scopes",
                "code": "invalid_choice",
                "detail": f"Scopes must be some of {', '.join(Scope.values)}"
                + (f"; unknown: {', '.join(unknown)}." if unknown else "."),
            }
        )
    days = settings.API_TOKEN_DEFAULT_DAYS if expires_in_days is None else expires_in_days
    if not 1 <= days <= settings.API_TOKEN_MAX_DAYS:
        errors.append(
            {
                "pointer": "/expires_in_days",
                "code": "out_of_range",
                "detail": f"Expiry must be between 1 and {settings.API_TOKEN_MAX_DAYS} days.",
            }
        )
    if errors:
        raise Invalid(errors[0]["detail"], code="common.token_invalid", errors=errors)
    if membership.role == Role.VIEWER and set(scopes) - {Scope.READ}:
        raise NotPermitted("Viewers may only create read-only tokens.", code="common.role_insufficient")
    prefix = secrets.token_hex(4)
    raw = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    token = ApiToken.objects.create(
        user=user,
        organisation=organisation,
        name=name,
        prefix=prefix,
        secret_hash=token_hash(raw),
        scopes=sorted(set(scopes)),
        expires_at=timezone.now() + timedelta(days=days),
    )
    audit_record(
        action="token.create",
        actor=user,
        organisation=organisation,
        object_type="api_token",
        object_id=token.pk,
        details={"name": name, "prefix": prefix, "scopes": token.scopes, "days": days},
    )
    return token, raw


@transaction.atomic
def api_token_revoke(*, actor: User, token: ApiToken) -> ApiToken:
    """Revoke a token (its owner, or an admin of its organisation). Idempotent.

    :raises NotFound: the actor may not see the token.
    """
    if token.user_id != actor.pk:
        membership = Membership.objects.filter(user=actor, organisation_id=token.organisation_id).first()
        if membership is None:
            raise NotFound("No such token.", code="common.token_not_found")
        if not role_at_least(membership.role, Role.ADMIN):
            raise NotPermitted(
                "Only the owner or an admin may revoke this token.", code="common.role_insufficient"
            )
    locked = ApiToken.objects.select_for_update().get(pk=token.pk)
    if locked.revoked_at is None:
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
        audit_record(
            action="token.revoke",
            actor=actor,
            organisation=locked.organisation,
            object_type="api_token",
            object_id=locked.pk,
            details={"prefix": locked.prefix},
        )
    return locked


# --- Sign-in lockout --------------------------------------------------------------


def login_locked_until(*, username: str) -> datetime | None:
    """When the username's lockout ends, or None if it is not locked."""
    row = LoginThrottle.objects.filter(username=username.strip().lower()).first()
    if row and row.locked_until and row.locked_until > timezone.now():
        return row.locked_until
    return None


@transaction.atomic
def login_failed(*, username: str, reason: str = "bad_credentials") -> bool:
    """Count a failed sign-in; returns True when this failure locked the username."""
    key = username.strip().lower()[:254]
    now = timezone.now()
    row, _ = LoginThrottle.objects.select_for_update().get_or_create(username=key)
    row = LoginThrottle.objects.select_for_update().get(pk=row.pk)
    if (now - row.window_started_at).total_seconds() > settings.LOCKOUT_WINDOW_SECONDS:
        row.failures = 0
        row.window_started_at = now
    row.failures += 1
    locked_now = row.failures >= settings.LOCKOUT_FAILURES and not (
        row.locked_until and row.locked_until > now
    )
    if locked_now:
        row.locked_until = now + timedelta(seconds=settings.LOCKOUT_SECONDS)
    row.save()
    user = User.objects.filter(username__iexact=key).first()
    audit_record(
        action="auth.login_failed",
        actor=user,
        actor_name=key if user is None else "",
        object_type="user",
        object_id=user.pk if user else "",
        details={"reason": reason, "failures": row.failures},
    )
    if locked_now:
        audit_record(
            action="auth.lockout",
            actor=user,
            actor_name=key if user is None else "",
            object_type="user",
            object_id=user.pk if user else "",
            details={"until": row.locked_until.isoformat() if row.locked_until else None},
        )
    return locked_now


@transaction.atomic
def login_succeeded(*, user: User, second_factor: bool) -> None:
    LoginThrottle.objects.filter(username=user.get_username().lower()).delete()
    audit_record(
        action="auth.login",
        actor=user,
        object_type="user",
        object_id=user.pk,
        details={"second_factor": second_factor},
    )
