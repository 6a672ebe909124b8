"""A dataset version: state and live progress, its uploads, and the owner's actions."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from common import otp
from common.exceptions import Conflict, Invalid, NotFound, NotPermitted
from common.models import Organisation, Role
from common.pages.helpers import page_user, raise_http
from common.pages.paging import page_of
from common.permissions import role_at_least
from common.public_ids import example
from custody import services
from custody.models import VersionContributor, VersionState
from custody.pages.access import VersionAccess, owner_version_for, require_role, version_for
from custody.pages.contributors import contributor_rows, organisation_named
from custody.pages.forms import ContributorInviteForm, RejectForm, VersionForm
from custody.parsing.detect import EXTENSIONS
from custody.parsing.records import Format

FORMAT_LABELS: dict[str, str] = {
    Format.JSONL: "JSON Lines",
    Format.CSV: "CSV",
    Format.TEXT_LINES: "Plain text, one record a line",
    Format.TEXT_DOCUMENTS: "Plain text, documents separated by blank lines",
    Format.PARQUET: "Parquet",
}
STAGE_LABELS: dict[str, str] = {
    "parse": "Reading and checking the files",
    "desensitize": "Desensitizing, screening and encrypting",
    "review": "Waiting for your review",
    "sealed": "Sealed",
}
# The parts the browser sends: small enough to retry cheaply, far under the API's part limit.
DEFAULT_PART_BYTES = 8 * 1024**2
POLL_SECONDS = 2
UPLOADS_PER_PAGE = 25


def percent(done: int, expected: int) -> int:
    return min(100, done * 100 // expected) if expected else 0


def _status_context(request: HttpRequest, access: VersionAccess) -> dict[str, Any]:
    version = access.version
    # Newest first: the upload that was just finished is on the first page, which htmx refreshes.
    contributions = page_of(
        request,
        version.contributions.select_related("contributor", "uploaded_by").order_by("-created_at", "-pk"),
        UPLOADS_PER_PAGE,
    )
    return {
        "version": version,
        "access": access,
        "stage_label": STAGE_LABELS.get(version.stage, version.stage.replace("_", " ").capitalize()),
        "percent": percent(version.records_done, version.records_expected),
        "polling": version.state == VersionState.PROCESSING,
        "poll_seconds": POLL_SECONDS,
        "contributions": contributions,
        "format_labels": FORMAT_LABELS,
    }


def _upload_config(access: VersionAccess) -> dict[str, Any]:
    part_bytes = min(DEFAULT_PART_BYTES, settings.UPLOAD_PART_MAX_BYTES)
    return {
        "start_url": reverse("api-contributions", kwargs={"version_id": access.version.public_id}),
        # The API's contribution URLs, less the id: the script appends "<id>", "<id>/parts/<n>"...
        "contribution_url": reverse(
            "api-contribution-detail", kwargs={"contribution_id": example("ctb")}
        ).removesuffix(example("ctb")),
        "part_bytes": part_bytes,
        "max_bytes": settings.UPLOAD_MAX_BYTES,
        "extensions": json.dumps({ext.lstrip("."): str(fmt) for ext, fmt in EXTENSIONS.items()}),
        "format_labels": json.dumps({str(k): v for k, v in FORMAT_LABELS.items()}),
        "formats": [(str(k), v) for k, v in FORMAT_LABELS.items()],
    }


@otp.signed_in
@require_GET
def version_page(request: HttpRequest, version_id: int) -> HttpResponse:
    """State, stage and live progress; the upload widget while open; the owner's buttons."""
    return render_version_page(request, version_for(request, version_id))


def render_version_page(
    request: HttpRequest,
    access: VersionAccess,
    *,
    invite_form: ContributorInviteForm | None = None,
    status: int = 200,
) -> HttpResponse:
    """The version page; a bound ``invite_form`` shows its errors beside its field."""
    version = access.version
    context = _status_context(request, access)
    context.update(
        {
            "dataset": version.dataset,
            "can_upload": version.state == VersionState.UPLOADING and access.can_act,
            "upload": _upload_config(access),
            "reject_form": RejectForm(),
            "version_form": VersionForm(),
            "has_report": version.state in (VersionState.REVIEW, VersionState.SEALED),
            "contributors": contributor_rows(access),
            "can_invite": version.state == VersionState.UPLOADING
            and access.is_owner
            and role_at_least(access.membership.role, Role.ADMIN),
            "invite_form": invite_form or ContributorInviteForm(),
        }
    )
    return render(request, "custody/version.html", context, status=status)


@otp.signed_in
@require_GET
def version_status(request: HttpRequest, version_id: int) -> HttpResponse:
    """The live part of the version page (htmx polls it while processing).

    When the state differs from the one the page shows (``?state=``), htmx is
    told to reload the whole page, so buttons and links follow the new state.
    """
    access = version_for(request, version_id)
    shown = request.GET.get("state")
    if request.headers.get("HX-Request") and shown and shown != access.version.state:
        response = HttpResponse(status=204)
        response["HX-Refresh"] = "true"
        return response
    return render(request, "custody/_version_status.html", _status_context(request, access))


def _owner_action(request: HttpRequest, version_id: int, what: str) -> VersionAccess:
    access = owner_version_for(request, version_id)
    require_role(access.membership, Role.MEMBER, what)
    return access


@otp.signed_in
@require_POST
def version_process(request: HttpRequest, version_id: int) -> HttpResponse:
    """Close the version to uploads and start processing what arrived."""
    access = _owner_action(request, version_id, "close uploads")
    try:
        services.version_process(actor=page_user(request), version=access.version)
    except (Conflict, Invalid) as exc:
        messages.error(request, exc.detail)
    except (NotFound, NotPermitted) as exc:
        raise_http(exc)
    else:
        messages.success(request, "Uploads are closed. Processing has started; this page follows it.")
    return redirect("custody:version", version_id=access.version.public_id)


@otp.signed_in
@require_POST
def version_retry(request: HttpRequest, version_id: int) -> HttpResponse:
    """Run a failed ingest again (the uploads are still held, encrypted)."""
    access = _owner_action(request, version_id, "retry processing")
    try:
        services.version_retry(actor=page_user(request), version=access.version)
    except (Conflict, Invalid) as exc:
        messages.error(request, exc.detail)
    except (NotFound, NotPermitted) as exc:
        raise_http(exc)
    else:
        messages.success(request, "Processing starts again.")
    return redirect("custody:version", version_id=access.version.public_id)


@otp.signed_in
@require_POST
def version_reject(request: HttpRequest, version_id: int) -> HttpResponse:
    """Reject a version in review (or a failed one), or abandon an open one; its uploads are shredded."""
    access = _owner_action(request, version_id, "reject versions")
    form = RejectForm(request.POST)
    reason = form.cleaned_data["reason"] if form.is_valid() else ""
    try:
        version = services.version_reject(actor=page_user(request), version=access.version, reason=reason)
    except (Conflict, Invalid) as exc:
        messages.error(request, exc.detail)
    except (NotFound, NotPermitted) as exc:
        raise_http(exc)
    else:
        messages.success(
            request,
            f"Version {version.number} is {version.get_state_display().lower()}; its uploads are shredded.",
        )
    return redirect("custody:version", version_id=access.version.public_id)


@otp.signed_in
@require_POST
def contributor_invite(request: HttpRequest, version_id: int) -> HttpResponse:
    """Let another provider organisation upload to this open version (the owner's admins only)."""
    access = owner_version_for(request, version_id)
    require_role(access.membership, Role.ADMIN, "invite other organisations")
    form = ContributorInviteForm(request.POST)
    if form.is_valid():
        other = organisation_named(form.cleaned_data["organisation"])
        if other is None:
            form.add_error("organisation", _unknown_organisation(form.cleaned_data["organisation"]))
        elif other.pk == access.version.dataset.owner_id:
            form.add_error("organisation", f"{other.name} owns this dataset: its members upload already.")
        else:
            invited = _invite(request, access, form, other)
            if invited is not None:
                return invited
    return render_version_page(request, access, invite_form=form, status=422)


def _unknown_organisation(text: str) -> str:
    return (
        f"No organisation is called “{text.strip()}”. Check the spelling, "
        "or ask them for the name their organisation page shows."
    )


def _invite(
    request: HttpRequest, access: VersionAccess, form: ContributorInviteForm, other: Organisation
) -> HttpResponse | None:
    """Invite ``other``; a redirect when done, None when the form now carries the reason it was not."""
    already = VersionContributor.objects.filter(version=access.version, organisation=other).exists()
    try:
        services.contributor_invite(actor=page_user(request), version=access.version, organisation=other)
    except Invalid as exc:
        form.add_error("organisation", f"{other.name} is not a data provider. {exc.detail}")
        return None
    except Conflict as exc:
        messages.error(request, exc.detail)
    except (NotFound, NotPermitted) as exc:
        raise_http(exc)
    else:
        if already:
            messages.info(request, f"{other.name} may already contribute to this version.")
        else:
            messages.success(
                request,
                f"{other.name} may now upload to version {access.version.number}. "
                "Its members find the invitation on their dashboard.",
            )
    return redirect("custody:version", version_id=access.version.public_id)
