"""Dashboard, organisation switcher, members and invitations."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from common import otp, selectors, services
from common.exceptions import Conflict, Invalid, NotFound, NotPermitted
from common.forms import InviteForm, RoleChangeForm, add_domain_error
from common.models import Invitation, Membership, Role, User
from common.pages.helpers import (
    admin_membership_or_403,
    home_url,
    membership_or_404,
    page_user,
    raise_http,
    safe_next,
)
from common.pages.paging import page_of
from common.permissions import role_at_least
from common.public_ids import is_public_id, pk_for

MEMBERS_PER_PAGE = 50


@otp.signed_in
@require_POST
def org_switch(request: HttpRequest) -> HttpResponse:
    """Act for another of the user's organisations (kept in the session as ``org_id``)."""
    user = page_user(request)
    next_url = safe_next(request, request.POST.get("next"))
    raw = request.POST.get("org_id", "")
    if not is_public_id(raw, "org"):
        messages.error(request, "Choose one of your organisations.")
        return redirect(next_url)
    membership = membership_or_404(user, pk_for("org", raw))
    request.session["org_id"] = membership.organisation_id
    messages.success(request, f"You are now acting for {membership.organisation.name}.")
    return redirect(next_url)


def _render_org(
    request: HttpRequest,
    membership: Membership,
    *,
    invite_form: InviteForm | None = None,
    row_errors: dict[int, str] | None = None,
    status: int = 200,
) -> HttpResponse:
    org = membership.organisation
    is_admin = role_at_least(membership.role, Role.ADMIN)
    invitations = [i for i in selectors.invitation_list(organisation=org) if i.is_open] if is_admin else []
    page = page_of(request, selectors.member_list(organisation=org), MEMBERS_PER_PAGE)
    context = {
        "org": org,
        "membership": membership,
        "is_admin": is_admin,
        "rows": [(m, (row_errors or {}).get(m.pk)) for m in page],
        "page": page,
        "invitations": invitations,
        "invitation_days": settings.INVITATION_DAYS,
        "invite_form": invite_form or InviteForm(),
        "roles": Role.choices,
    }
    return render(request, "common/organisation.html", context, status=status)


@otp.signed_in
@require_GET
def organisation_page(request: HttpRequest, org_id: int) -> HttpResponse:
    """Members and roles; admins also see the forms to invite, change roles and remove."""
    return _render_org(request, membership_or_404(page_user(request), org_id))


@otp.signed_in
@require_POST
def org_invite(request: HttpRequest, org_id: int) -> HttpResponse:
    user = page_user(request)
    membership = admin_membership_or_403(user, org_id)
    org = membership.organisation
    form = InviteForm(request.POST)
    if form.is_valid():
        try:
            services.invitation_create(
                actor=user, organisation=org, email=form.cleaned_data["email"], role=form.cleaned_data["role"]
            )
        except Invalid as exc:
            add_domain_error(form, exc)
        except Conflict as exc:
            form.add_error("email", exc.detail)
        except (NotFound, NotPermitted) as exc:
            raise_http(exc)
        else:
            messages.success(request, f"Invitation sent to {form.cleaned_data['email']}.")
            return redirect("common:org", org_id=org.public_id)
    return _render_org(request, membership, invite_form=form)


@otp.signed_in
@require_POST
def org_member_role(request: HttpRequest, org_id: int, membership_id: int) -> HttpResponse:
    user = page_user(request)
    membership = admin_membership_or_403(user, org_id)
    target = _member_or_404(membership, membership_id)
    form = RoleChangeForm(request.POST)
    if not form.is_valid():
        return _render_org(request, membership, row_errors={target.pk: "Choose a role."})
    try:
        services.membership_role_change(actor=user, membership=target, role=form.cleaned_data["role"])
    except (Conflict, Invalid) as exc:
        messages.error(request, exc.detail)
    except (NotFound, NotPermitted) as exc:
        raise_http(exc)
    else:
        messages.success(request, f"{target.user.get_username()} is now {form.cleaned_data['role']}.")
    return redirect("common:org", org_id=membership.organisation.public_id)


@otp.signed_in
@require_POST
def org_member_remove(request: HttpRequest, org_id: int, membership_id: int) -> HttpResponse:
    user = page_user(request)
    membership = admin_membership_or_403(user, org_id)
    target = _member_or_404(membership, membership_id)
    name = target.user.get_username()
    try:
        services.membership_remove(actor=user, membership=target)
    except Conflict as exc:
        messages.error(request, exc.detail)
    except (NotFound, NotPermitted) as exc:
        raise_http(exc)
    else:
        messages.success(request, f"{name} was removed from {membership.organisation.name}.")
        if target.user_id == user.pk:
            return redirect(home_url())
    return redirect("common:org", org_id=membership.organisation.public_id)


def _member_or_404(membership: Membership, membership_id: int) -> Membership:
    try:
        return selectors.member_get(organisation=membership.organisation, membership_id=membership_id)
    except NotFound as exc:
        raise_http(exc)


# --- Invitations -------------------------------------------------------------------------


def _invitation_or_404(raw_token: str) -> Invitation:
    digest = hashlib.sha256(raw_token.encode()).hexdigest()
    invitation = (
        Invitation.objects.select_related("organisation", "invited_by").filter(token_hash=digest).first()
    )
    if invitation is None:
        raise Http404("No such invitation.")
    return invitation


@require_http_methods(["GET", "POST"])
def invitation_page(request: HttpRequest, token: str) -> HttpResponse:
    """Accept an invitation. Visitors who are not signed in are offered sign-in or sign-up first."""
    invitation = _invitation_or_404(token)
    if not request.user.is_authenticated:
        if request.method == "POST":
            return redirect_to_login(request.get_full_path())
        return render(request, "common/invitation.html", {"invitation": invitation})
    held_back = otp.second_factor_redirect(request)
    if held_back is not None:
        return held_back
    user = page_user(request)
    status = 200
    if request.method == "POST":
        try:
            joined = services.invitation_accept(raw_token=token, user=user)
        except NotPermitted as exc:
            raise PermissionDenied(exc.detail) from exc
        except NotFound as exc:
            raise_http(exc)
        except Conflict as exc:
            messages.error(request, exc.detail)
            status = 409
        else:
            request.session["org_id"] = joined.organisation_id
            messages.success(request, f"You joined {joined.organisation.name} as {joined.role}.")
            return redirect("common:org", org_id=joined.organisation.public_id)
    context = {"invitation": invitation, "email_matches": _email_matches(invitation, user)}
    return render(request, "common/invitation.html", context, status=status)


def _email_matches(invitation: Invitation, user: User) -> bool:
    return invitation.email.lower() == user.email.lower()
