"""Withdrawal in the provider portal: a contributor withdraws its contribution and sees the lineage.

- ``/portal/withdrawals/``: the acting organisation's contributions to sealed
  versions (its own datasets' and pooled ones it was invited to), each with a
  Withdraw link for its admins, and the withdrawals that concern it (made by
  it, or from a version it owns).
- ``/portal/contributions/<ctb>/withdraw/``: what a withdrawal does, a reason
  and a confirmation; ``custody.services.contribution_withdraw`` does it.
- ``/portal/withdrawals/<wdr>/``: the lineage page: the withdrawal's state, the
  version that replaces the old one, and every job that read the withdrawn
  records (custody's per-contribution reads) with its licensee, receipt and
  artifact. Portal is the layer that may read custody and training together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods

from common import otp
from common.exceptions import Conflict, Invalid, NotFound, NotPermitted
from common.forms import add_domain_error
from common.models import Membership, Organisation, Role
from common.pages.helpers import page_user, raise_http
from common.permissions import role_at_least
from custody import services as custody
from custody.models import Contribution, ContributionWithdrawal, DatasetVersion, VersionState
from custody.pages.access import current_membership
from training.models import TrainingJob
from training.receipts import receipt_sha256


class WithdrawForm(forms.Form):
    reason = forms.CharField(
        max_length=300,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Why you withdraw it (consent ended, a contract ended): the other contributors and the "
        "audit log see it.",
    )
    confirm = forms.BooleanField(
        label="Re-seal the version without this contribution and close the current version to new jobs",
        error_messages={"required": "Confirm that you mean to withdraw the contribution."},
    )


def _membership(request: HttpRequest) -> Membership:
    membership = current_membership(request)
    if membership is None or not membership.organisation.is_provider:
        raise PermissionDenied(
            "Withdrawals belong to provider organisations: switch to a provider organisation in the header."
        )
    return membership


def _concerning(organisation: Organisation) -> Q:
    return Q(organisation=organisation) | Q(from_version__dataset__owner=organisation)


@otp.signed_in
@require_GET
def withdrawals_page(request: HttpRequest) -> HttpResponse:
    """The organisation's contributions to sealed versions, and the withdrawals that concern it."""
    membership = _membership(request)
    org = membership.organisation
    contributions = (
        Contribution.objects.filter(contributor=org, version__state=VersionState.SEALED, shards__isnull=False)
        .select_related("version__dataset__owner")
        .distinct()
        .order_by("version__dataset__name", "version__number", "pk")
    )
    withdrawals = (
        ContributionWithdrawal.objects.filter(_concerning(org))
        .select_related("contribution", "from_version__dataset", "to_version", "organisation")
        .order_by("-created_at")
    )
    context = {
        "org": org,
        "contributions": contributions,
        "withdrawals": withdrawals,
        "can_withdraw": role_at_least(membership.role, Role.ADMIN),
    }
    return render(request, "portal/withdrawals.html", context)


def _contribution(membership: Membership, contribution_id: int) -> Contribution:
    contribution = (
        Contribution.objects.select_related("version__dataset__owner", "contributor")
        .filter(pk=contribution_id, contributor=membership.organisation)
        .first()
    )
    if contribution is None:
        raise Http404("No such contribution of yours.")
    if not role_at_least(membership.role, Role.ADMIN):
        raise PermissionDenied(f"Only admins of {membership.organisation.name} withdraw its contributions.")
    return contribution


@otp.signed_in
@require_http_methods(["GET", "POST"])
def withdraw_page(request: HttpRequest, contribution_id: int) -> HttpResponseBase:
    """Confirm and withdraw one of the organisation's contributions (its admins)."""
    membership = _membership(request)
    contribution = _contribution(membership, contribution_id)
    existing = ContributionWithdrawal.objects.filter(contribution=contribution).first()
    if existing is not None:
        return redirect("portal:withdrawal", withdrawal_id=existing.public_id)
    form = WithdrawForm(request.POST or None)
    status = 200
    if request.method == "POST":
        status = 422
        if form.is_valid():
            try:
                withdrawal = custody.contribution_withdraw(
                    actor=page_user(request), contribution=contribution, reason=form.cleaned_data["reason"]
                )
            except Invalid as exc:
                add_domain_error(form, exc)
            except Conflict as exc:
                form.add_error(None, exc.detail)
                status = 409
            except (NotFound, NotPermitted) as exc:
                raise_http(exc)
            else:
                messages.success(
                    request,
                    f"Withdrawn: {contribution.version.dataset.name} is being re-sealed without "
                    f"{contribution.filename}.",
                )
                return redirect("portal:withdrawal", withdrawal_id=withdrawal.public_id)
    context = {"form": form, "contribution": contribution, "version": contribution.version}
    return render(request, "portal/withdraw.html", context, status=status)


@dataclass(frozen=True)
class LineageRow:
    consumer_ref: str
    licensee: str
    version: DatasetVersion
    tokens: int
    settled: bool
    job: TrainingJob | None

    @property
    def artifact(self) -> str:
        if self.job is None or not self.job.artifact_blob_key:
            return "none"
        return "kept in custody" if self.job.artifact_encrypted else "released for download"

    @property
    def receipt_sha256(self) -> str:
        """The signed receipt's hash (what the artifact's model card names), or "" before one exists."""
        document: dict[str, Any] = (self.job.receipt or {}) if self.job else {}
        return receipt_sha256(document) if isinstance(document.get("receipt"), dict) else ""


def lineage_rows(withdrawal: ContributionWithdrawal) -> list[LineageRow]:
    """Every read of the withdrawn records, with the job, its receipt and its artifact where it is a job."""
    reads = custody.contribution_lineage(contribution=withdrawal.contribution)
    job_ids = [
        int(r.consumer_ref.removeprefix("training-job-"))
        for r in reads
        if r.consumer_ref.startswith("training-job-")
    ]
    jobs = {job.pk: job for job in TrainingJob.objects.filter(pk__in=job_ids).select_related("organisation")}
    names = dict(Organisation.objects.filter(pk__in={r.licensee_id for r in reads}).values_list("pk", "name"))
    versions = DatasetVersion.objects.select_related("dataset").in_bulk({r.version_id for r in reads})
    rows = []
    for read in reads:
        job_id = read.consumer_ref.removeprefix("training-job-")
        rows.append(
            LineageRow(
                consumer_ref=read.consumer_ref,
                licensee=names.get(read.licensee_id, "the platform") if read.licensee_id else "the platform",
                version=versions[read.version_id],
                tokens=read.tokens,
                settled=read.settled,
                job=jobs.get(int(job_id)) if job_id.isdigit() else None,
            )
        )
    return rows


@otp.signed_in
@require_GET
def withdrawal_page(request: HttpRequest, withdrawal_id: int) -> HttpResponse:
    """The lineage of a withdrawal: the successor version and every job that read the withdrawn records."""
    membership = _membership(request)
    withdrawal = (
        ContributionWithdrawal.objects.filter(_concerning(membership.organisation), pk=withdrawal_id)
        .select_related(
            "contribution", "from_version__dataset__owner", "to_version", "organisation", "requested_by"
        )
        .first()
    )
    if withdrawal is None:
        raise Http404("No such withdrawal.")
    rows = lineage_rows(withdrawal)
    context = {
        "withdrawal": withdrawal,
        "rows": rows,
        "released_count": sum(1 for r in rows if r.artifact == "released for download"),
        "refresh": withdrawal.state != "done",
    }
    return render(request, "portal/withdrawal.html", context)
