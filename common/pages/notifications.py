"""Notifications of an organisation, and its webhook endpoints with their delivery logs.

Every member reads the notifications; only admins see and manage webhooks.
The signing secret of a new endpoint is shown once, on the page that answers
the create form, which is never cached.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from common import otp, webhooks
from common.exceptions import Invalid, NotFound
from common.forms import add_domain_error
from common.models import Membership, Role, WebhookEndpoint
from common.notifications import notification_list, notification_unread_count, notifications_mark_read
from common.pages.helpers import membership_or_404, page_user, raise_http
from common.pages.paging import page_of
from common.permissions import role_at_least
from common.public_ids import is_public_id, pk_for

NOTIFICATIONS_PER_PAGE = 50
DELIVERIES_PER_PAGE = 50


class WebhookCreateForm(forms.Form):
    url = forms.CharField(
        label="Endpoint URL",
        max_length=500,
        help_text="Where Sealroom POSTs the signed events: an https URL that your service answers with 2xx.",
        widget=forms.URLInput(attrs={"autocomplete": "url", "spellcheck": "false"}),
    )
    event_kinds = forms.CharField(
        label="Event kinds",
        required=False,
        max_length=2000,
        help_text="Comma-separated kinds (order.paid) or families (order.*). Leave empty for every event.",
    )
    description = forms.CharField(label="Description", required=False, max_length=200)

    def kinds(self) -> list[str]:
        raw: str = self.cleaned_data.get("event_kinds") or ""
        return [part.strip() for part in raw.split(",") if part.strip()]


def _admin_or_403(request: HttpRequest, org_id: int) -> Membership:
    membership = membership_or_404(page_user(request), org_id)
    if not role_at_least(membership.role, Role.ADMIN):
        raise PermissionDenied(f"Only admins of {membership.organisation.name} manage its webhooks.")
    return membership


def _endpoint_or_404(membership: Membership, webhook_id: int) -> WebhookEndpoint:
    try:
        return webhooks.webhook_endpoint_get(organisation=membership.organisation, endpoint_id=webhook_id)
    except NotFound as exc:
        raise_http(exc)


@otp.signed_in
@require_GET
def notifications_page(request: HttpRequest, org_id: int) -> HttpResponse:
    """The organisation's notifications, newest first; ``?unread=1`` shows unread ones only."""
    membership = membership_or_404(page_user(request), org_id)
    org = membership.organisation
    unread_only = request.GET.get("unread") == "1"
    notifications = notification_list(organisation=org, unread_only=unread_only)
    context = {
        "org": org,
        "page": page_of(request, notifications, NOTIFICATIONS_PER_PAGE),
        "unread_only": unread_only,
        "unread_count": notification_unread_count(organisation=org),
        "is_admin": role_at_least(membership.role, Role.ADMIN),
    }
    return render(request, "common/notifications.html", context)


@otp.signed_in
@require_POST
def notifications_read(request: HttpRequest, org_id: int) -> HttpResponse:
    """Mark one notification (``id``) or all of them read."""
    membership = membership_or_404(page_user(request), org_id)
    raw = request.POST.get("id", "")
    if raw and not is_public_id(raw, "ntf"):
        messages.error(request, "That is not a notification id; nothing was marked read.")
        return redirect("common:notifications", org_id=membership.organisation.public_id)
    ids = [pk_for("ntf", raw)] if raw else None
    marked = notifications_mark_read(organisation=membership.organisation, ids=ids)
    if ids is None:
        messages.success(request, f"Marked {marked} notification{'s' if marked != 1 else ''} read.")
    return redirect("common:notifications", org_id=membership.organisation.public_id)


@otp.signed_in
@require_http_methods(["GET", "POST"])
def webhooks_page(request: HttpRequest, org_id: int) -> HttpResponse:
    """The organisation's webhook endpoints and the form to register one (admins)."""
    user = page_user(request)
    membership = _admin_or_403(request, org_id)
    org = membership.organisation
    form = WebhookCreateForm(request.POST if request.method == "POST" else None)
    status = 200
    if request.method == "POST":
        status = 422
        if form.is_valid():
            try:
                endpoint, secret = webhooks.webhook_endpoint_create(
                    actor=user,
                    organisation=org,
                    url=form.cleaned_data["url"],
                    event_kinds=form.kinds(),
                    description=form.cleaned_data["description"],
                )
            except Invalid as exc:
                add_domain_error(form, exc)
            else:
                response = render(
                    request,
                    "common/webhook_created.html",
                    {"org": org, "endpoint": endpoint, "secret": secret},
                )
                add_never_cache_headers(response)
                return response
    context = {"org": org, "form": form, "endpoints": webhooks.webhook_endpoint_list(organisation=org)}
    return render(request, "common/webhooks.html", context, status=status)


@otp.signed_in
@require_GET
def webhook_page(request: HttpRequest, org_id: int, webhook_id: int) -> HttpResponse:
    """One endpoint and its delivery log, newest first (admins)."""
    membership = _admin_or_403(request, org_id)
    endpoint = _endpoint_or_404(membership, webhook_id)
    deliveries = webhooks.webhook_delivery_list(endpoint=endpoint)
    context = {
        "org": membership.organisation,
        "endpoint": endpoint,
        "page": page_of(request, deliveries, DELIVERIES_PER_PAGE),
    }
    return render(request, "common/webhook.html", context)


@otp.signed_in
@require_POST
def webhook_toggle(request: HttpRequest, org_id: int, webhook_id: int) -> HttpResponse:
    """Enable or disable an endpoint (``active`` = ``true`` or ``false``)."""
    membership = _admin_or_403(request, org_id)
    endpoint = _endpoint_or_404(membership, webhook_id)
    active = request.POST.get("active") == "true"
    webhooks.webhook_endpoint_set_active(actor=page_user(request), endpoint=endpoint, active=active)
    messages.success(request, f"Webhook {endpoint.url} is {'enabled' if active else 'disabled'}.")
    return redirect("common:webhook", org_id=membership.organisation.public_id, webhook_id=endpoint.public_id)


@otp.signed_in
@require_POST
def webhook_delete(request: HttpRequest, org_id: int, webhook_id: int) -> HttpResponse:
    """Delete an endpoint and its delivery log."""
    membership = _admin_or_403(request, org_id)
    endpoint = _endpoint_or_404(membership, webhook_id)
    url = endpoint.url
    webhooks.webhook_endpoint_delete(actor=page_user(request), endpoint=endpoint)
    messages.success(request, f"Webhook {url} was deleted.")
    return redirect("common:webhooks", org_id=membership.organisation.public_id)
