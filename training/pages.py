"""Training pages: the job list, a submission form from a template, a job with live progress,
and the operators' oversight list."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from common import otp
from common.exceptions import Conflict, Invalid, NotFound, NotPermitted
from common.models import Membership, Role
from common.pages.helpers import page_user, raise_http
from common.pages.paging import page_of
from common.permissions import role_at_least
from training import selectors, services
from training.forms import API_ONLY_TEMPLATES, JobForm
from training.generate_pages import may_generate_from
from training.job_templates import TEMPLATES
from training.job_view import job_view
from training.models import TrainingJob
from training.services.mixed_jobs import job_submit_mixed

POLL_SECONDS = 2
JOBS_PER_PAGE = 25
OPS_JOBS_PER_PAGE = 50


def _memberships(request: HttpRequest) -> list[Membership]:
    """The user's memberships, the one the session acts for first."""
    memberships = list(
        Membership.objects.select_related("organisation")
        .filter(user=page_user(request))
        .order_by("organisation__name")
    )
    current = request.session.get("org_id")
    memberships.sort(key=lambda m: m.organisation_id != current)
    return memberships


def _current(request: HttpRequest) -> Membership:
    memberships = _memberships(request)
    if not memberships:
        raise PermissionDenied("Training jobs belong to organisations; you are a member of none.")
    return memberships[0]


def _job_for(request: HttpRequest, job_id: int) -> tuple[TrainingJob, Membership]:
    """A job of one of the user's organisations. :raises Http404: any other."""
    for membership in _memberships(request):
        try:
            return selectors.job_get_for_org(organisation=membership.organisation, job_id=job_id), membership
        except NotFound:
            continue
    raise Http404("No such training job.")


def _can_submit(membership: Membership) -> bool:
    return membership.organisation.is_trainer and role_at_least(membership.role, Role.MEMBER)


@otp.signed_in
@require_GET
def jobs_page(request: HttpRequest) -> HttpResponse:
    """The acting organisation's jobs, newest first."""
    membership = _current(request)
    jobs = selectors.job_list_for_org(organisation=membership.organisation)
    page = page_of(request, jobs, JOBS_PER_PAGE)
    return render(
        request,
        "training/job_list.html",
        {"org": membership.organisation, "page": page, "can_submit": _can_submit(membership)},
    )


@otp.signed_in
@require_http_methods(["GET", "POST"])
def job_new(request: HttpRequest) -> HttpResponse:
    """Submit a job from a template (trainer organisations, members and admins)."""
    membership = _current(request)
    if not _can_submit(membership):
        raise PermissionDenied(
            f"Only members and admins of a trainer organisation submit jobs; {membership.organisation.name} "
            "is not a trainer or your role is viewer."
        )
    form = JobForm(request.POST or None, membership=membership)
    if request.method == "POST" and form.is_valid():
        parts = form.mix_parts()
        try:
            if parts:
                job = job_submit_mixed(
                    actor=page_user(request),
                    organisation=membership.organisation,
                    parts=parts,
                    request=form.job_request(),
                )
            else:
                job = services.job_submit(
                    actor=page_user(request),
                    organisation=membership.organisation,
                    grant=form.grants[form.cleaned_data["grant"]],
                    request=form.job_request(),
                )
        except (Invalid, Conflict) as exc:
            form.add_domain_error(exc)
        except (NotFound, NotPermitted) as exc:
            raise_http(exc)
        else:
            messages.success(request, f"Job {job.public_id} is queued.")
            return redirect("training:job", job_id=job.public_id)
    templates = [t.as_dict() for t in TEMPLATES.values()]
    return render(
        request,
        "training/job_new.html",
        {"form": form, "templates": templates, "api_only": sorted(str(t) for t in API_ONLY_TEMPLATES)},
    )


def _job_context(job: TrainingJob, membership: Membership) -> dict[str, Any]:
    return {
        "job": job,
        "membership": membership,
        "can_act": role_at_least(membership.role, Role.MEMBER),
        "polling": not job.is_final,
        "poll_seconds": POLL_SECONDS,
        # A model held in custody links to the generation form when its license permits it.
        "can_generate": job.is_final and job.artifact_encrypted and may_generate_from(job, membership),
        **job_view(job),
    }


@otp.signed_in
@require_GET
def job_page(request: HttpRequest, job_id: int) -> HttpResponse:
    job, membership = _job_for(request, job_id)
    return render(request, "training/job.html", _job_context(job, membership))


@otp.signed_in
@require_GET
def job_status(request: HttpRequest, job_id: int) -> HttpResponse:
    """The live part of the job page, all of it: header state, stage, progress, chart, history and
    result from one reading of the job (htmx swaps it every few seconds and stops once it ends)."""
    job, membership = _job_for(request, job_id)
    return render(request, "training/_job_status.html", _job_context(job, membership))


@otp.signed_in
@require_POST
def job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    job, membership = _job_for(request, job_id)
    if not role_at_least(membership.role, Role.MEMBER):
        raise PermissionDenied("Only members and admins cancel jobs.")
    try:
        job = services.job_cancel(actor=page_user(request), job=job)
    except Conflict as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(
            request, "Cancelled." if job.is_final else "Cancel requested: the job stops within seconds."
        )
    return redirect("training:job", job_id=job.public_id)


def _staff(request: HttpRequest, *, act: bool) -> None:
    user = page_user(request)
    if not user.is_platform_staff:
        raise PermissionDenied("This is for platform operators and auditors.")
    if act and not user.is_operator:
        raise PermissionDenied("Auditors have read-only access.")


@otp.signed_in
@require_GET
def ops_jobs_page(request: HttpRequest) -> HttpResponse:
    """Every organisation's jobs, for operator oversight."""
    _staff(request, act=False)
    page = page_of(request, selectors.job_list_all(), OPS_JOBS_PER_PAGE)
    return render(
        request, "training/ops_jobs.html", {"page": page, "can_act": page_user(request).is_operator}
    )


@otp.signed_in
@require_POST
def ops_job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    _staff(request, act=True)
    job = selectors.job_list_all().filter(pk=job_id).first()
    if job is None:
        raise Http404("No such training job.")
    try:
        services.job_cancel(actor=page_user(request), job=job)
    except Conflict as exc:
        messages.error(request, exc.detail)
    else:
        messages.success(request, f"Job {job.public_id}: cancel requested.")
    return redirect("training:ops_jobs")
