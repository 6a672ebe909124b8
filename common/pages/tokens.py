"""API tokens: list, create (the secret is shown once), revoke."""

from __future__ import annotations

from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_http_methods, require_POST

from common import otp, selectors, services
from common.exceptions import Invalid, NotFound, NotPermitted
from common.forms import TokenCreateForm, add_domain_error
from common.models import Scope
from common.pages.helpers import page_user, raise_http
from common.pages.paging import page_of

TOKENS_PER_PAGE = 50


@otp.signed_in
@require_http_methods(["GET", "POST"])
def tokens_page(request: HttpRequest) -> HttpResponse:
    """The user's tokens in every organisation, and the form to create one."""
    user = page_user(request)
    memberships = list(selectors.membership_list_for_user(user=user))
    current = request.session.get("org_id")
    initial = {
        "organisation": current if any(m.organisation_id == current for m in memberships) else None,
        "scopes": [Scope.READ],
    }
    form = TokenCreateForm(
        request.POST if request.method == "POST" else None, memberships=memberships, initial=initial
    )
    status = 200
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        organisation = next(m.organisation for m in memberships if m.organisation_id == data["organisation"])
        try:
            token, secret = services.api_token_create(
                user=user,
                organisation=organisation,
                name=data["name"],
                scopes=data["scopes"],
                expires_in_days=data["expires_in_days"],
            )
        except Invalid as exc:
            add_domain_error(form, exc)
        except NotPermitted as exc:
            form.add_error("scopes", exc.detail)
            status = 403
        except NotFound as exc:
            raise_http(exc)
        else:
            # The only time the secret exists outside the caller: never cache this page.
            response = render(request, "common/token_created.html", {"token": token, "secret": secret})
            add_never_cache_headers(response)
            return response
    tokens = page_of(request, selectors.token_list_for_user(user=user), TOKENS_PER_PAGE)
    context = {
        "form": form,
        "tokens": tokens,
        "page": tokens,
        "has_memberships": bool(memberships),
    }
    return render(request, "common/tokens.html", context, status=status)


@otp.signed_in
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """Revoke a token (its owner, or an admin of its organisation). htmx gets the row back."""
    user = page_user(request)
    try:
        token = selectors.token_get_for_user(user=user, token_id=token_id)
        token = services.api_token_revoke(actor=user, token=token)
    except (NotFound, NotPermitted) as exc:
        raise_http(exc)
    if request.headers.get("HX-Request") and token.user_id == user.pk:
        return render(request, "common/_token_row.html", {"token": token})
    messages.success(request, f"Token “{token.name}” ({token.prefix}…) is revoked.")
    return redirect("common:tokens")
