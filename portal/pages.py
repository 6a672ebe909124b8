"""The organisation dashboard (the signed-in landing page) and the provider's data access log."""

from __future__ import annotations

from datetime import UTC, datetime

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from common import otp
from common.audit import audit_record
from common.exports import csv_response
from common.models import Membership
from common.pages.helpers import page_user
from common.pages.paging import page_of
from custody.pages.access import current_membership
from portal import selectors

ACCESS_ROWS_PER_PAGE = 50


@otp.signed_in
@require_GET
def dashboard_page(request: HttpRequest) -> HttpResponse:
    """The organisations of the user and, for the one acted for, its data, sales, jobs and notices."""
    membership = current_membership(request)
    org = membership.organisation if membership else None
    context = {
        "membership": membership,
        "provider": selectors.provider_summary(organisation=org) if org and org.is_provider else None,
        "trainer": selectors.trainer_summary(organisation=org) if org and org.is_trainer else None,
        "balances": selectors.balances(organisation=org) if org else [],
    }
    return render(request, "portal/dashboard.html", context)


def _provider_membership(request: HttpRequest) -> Membership:
    membership = current_membership(request)
    if membership is None or not membership.organisation.is_provider:
        acting = f" {membership.organisation.name} is a trainer." if membership else ""
        raise PermissionDenied(
            "The data access log belongs to provider organisations." + acting + " Switch to a provider "
            "organisation in the header to see who trained on its data."
        )
    return membership


@otp.signed_in
@require_GET
def access_log_page(request: HttpRequest) -> HttpResponse:
    """Who trained on the organisation's versions: when, how many platform tokens, under which license."""
    membership = _provider_membership(request)
    org = membership.organisation
    page = page_of(request, selectors.access_log(organisation=org), ACCESS_ROWS_PER_PAGE)
    context = {"org": org, "page": page, "rows": selectors.access_rows(list(page.object_list))}
    return render(request, "portal/access_log.html", context)


@otp.signed_in
@require_GET
def access_log_export(request: HttpRequest) -> StreamingHttpResponse:
    """The whole access log, oldest first, as spreadsheet-safe CSV.

    Audited before the download starts, as the console's exports are: who took
    a copy of the log, and when, is itself part of the record.
    """
    org = _provider_membership(request).organisation
    with transaction.atomic():
        audit_record(
            action="portal.access_log_export",
            actor=page_user(request),
            organisation=org,
            object_type="access_log",
            object_id=org.pk,
            details={"format": "csv"},
        )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return csv_response(
        filename=f"sealroom-access-log-{org.slug}-{stamp}",
        header=selectors.ACCESS_LOG_HEADER,
        rows=(row.as_csv() for row in selectors.access_rows_all(organisation=org)),
    )
