"""The provider's valuation page: value a version of one's own (owner's admins), and see past
valuations' aggregates (training/services/valuation.py; docs/training.md "Data valuation")."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from common import otp
from common.exceptions import Conflict, Invalid, NotFound, NotPermitted
from common.forms import add_domain_error
from common.models import Membership, Role
from common.pages.helpers import page_user, raise_http
from common.permissions import role_at_least
from custody.models import DatasetVersion, GrantPurpose
from training.models import TrainingJob
from training.runner.spec import ValuationSettings
from training.services.valuation import VALUABLE_STATES, ValuationRequest, valuation_submit_own

DEFAULTS = ValuationSettings()


class ValuationForm(forms.Form):
    label_field = forms.CharField(
        max_length=120, help_text="The metadata field that holds each record's label (e.g. topic, intent)."
    )
    k = forms.IntegerField(
        min_value=1, max_value=1000, initial=DEFAULTS.k, help_text="Neighbours each record is judged among."
    )
    min_group = forms.IntegerField(
        min_value=5,
        max_value=1_000_000,
        initial=DEFAULTS.min_group,
        label="Smallest group",
        help_text="No published number describes fewer records than this.",
    )


def _owned(request: HttpRequest, version_id: int) -> tuple[DatasetVersion, Membership]:
    """A version of one of the user's organisations. :raises Http404: any other."""
    version = DatasetVersion.objects.select_related("dataset__owner").filter(pk=version_id).first()
    if version is None:
        raise Http404("No such dataset version.")
    membership = (
        Membership.objects.select_related("organisation")
        .filter(user=page_user(request), organisation_id=version.dataset.owner_id)
        .first()
    )
    if membership is None:
        raise Http404("No such dataset version.")
    return version, membership


def _past(version: DatasetVersion) -> list[dict[str, Any]]:
    jobs = TrainingJob.objects.filter(
        grant__version=version, grant__purpose=GrantPurpose.VALUATION, template="valuation"
    ).order_by("-created_at", "-pk")[:20]
    rows = []
    for job in jobs:
        valuation = (job.metrics or {}).get("valuation") or {}
        groups = sorted((valuation.get("groups") or {}).items())
        rows.append({"job": job, "summary": valuation.get("summary") or {}, "groups": groups})
    return rows


@otp.signed_in
@require_http_methods(["GET", "POST"])
def valuation_page(request: HttpRequest, version_id: int) -> HttpResponse:
    version, membership = _owned(request, version_id)
    can_value = role_at_least(membership.role, Role.ADMIN) and version.state in VALUABLE_STATES
    form = ValuationForm(request.POST or None)
    if request.method == "POST":
        if not role_at_least(membership.role, Role.ADMIN):
            raise PermissionDenied("Only the owner's admins value a version.")
        if form.is_valid():
            data = form.cleaned_data
            try:
                job = valuation_submit_own(
                    actor=page_user(request),
                    organisation=membership.organisation,
                    version=version,
                    request=ValuationRequest(
                        label_field=data["label_field"],
                        valuation={"k": data["k"], "min_group": data["min_group"]},
                    ),
                )
            except (Invalid, Conflict) as exc:
                add_domain_error(form, exc)
            except (NotFound, NotPermitted) as exc:
                raise_http(exc)
            else:
                messages.success(request, f"Valuation {job.public_id} is queued.")
                return redirect("training:job", job_id=job.public_id)
    return render(
        request,
        "training/valuation.html",
        {"version": version, "form": form, "can_value": can_value, "past": _past(version)},
    )
