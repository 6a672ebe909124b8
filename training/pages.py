"""Training pages: the job list, a submission form from a template, a job with live progress,
and the operators' oversight list."""

from __future__ import annotations

from typing import Any

from django import forms
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
from training.charts import loss_chart
from training.job_templates import TEMPLATES
from training.models import BaseState, JobTemplate, TrainingJob

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


class JobForm(forms.Form):
    grant = forms.TypedChoiceField(label="License", coerce=int, help_text="The license the job trains under.")
    template = forms.ChoiceField(choices=JobTemplate.choices, initial=JobTemplate.CAUSAL_LM)
    base = forms.TypedChoiceField(label="Base model", coerce=int)
    epochs = forms.IntegerField(min_value=1, max_value=100, initial=1)
    learning_rate = forms.FloatField(initial=5e-4)
    batch_size = forms.IntegerField(min_value=1, max_value=1024, initial=8)
    max_seq_len = forms.IntegerField(
        label="Maximum sequence length", min_value=8, max_value=1024, initial=128
    )
    seed = forms.IntegerField(min_value=0, initial=0)
    label_field = forms.CharField(
        required=False, help_text="Classification only: the metadata field that holds each record's label."
    )
    dp_enabled = forms.BooleanField(label="Differential privacy (DP-SGD)", required=False)
    target_epsilon = forms.FloatField(label="Target epsilon", required=False, min_value=0.001)
    purpose = forms.CharField(required=False, help_text="One of the license's purposes (default: its first).")

    FIELD_OF_POINTER = {
        "/grant": "grant",
        "/template": "template",
        "/base": "base",
        "/label_field": "label_field",
        "/purpose": "purpose",
        "/dp/enabled": "dp_enabled",
        "/dp/target_epsilon": "target_epsilon",
        "/dp/delta": "target_epsilon",
    }

    def __init__(self, *args: Any, membership: Membership, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        organisation = membership.organisation
        self.grants = {g.pk: g for g in selectors.grant_list_for_org(organisation=organisation)}
        grant_field = self.fields["grant"]
        base_field = self.fields["base"]
        assert isinstance(grant_field, forms.ChoiceField) and isinstance(base_field, forms.ChoiceField)
        grant_field.choices = [
            (g.pk, f"License {g.pk}: {g.version.dataset.name} v{g.version.number}")
            for g in self.grants.values()
        ]
        bases = selectors.base_list_for_org(organisation=organisation).filter(state=BaseState.VALIDATED)
        self.bases = {b.pk: b for b in bases}
        base_field.choices = [(b.pk, f"{b.name} ({b.get_task_display()})") for b in bases]

    def job_request(self) -> services.JobRequest:
        data = self.cleaned_data
        hyperparameters = {
            name: data[name] for name in ("epochs", "learning_rate", "batch_size", "max_seq_len", "seed")
        }
        dp = {"enabled": True, "target_epsilon": data["target_epsilon"]} if data["dp_enabled"] else None
        return services.JobRequest(
            template=data["template"],
            base=self.bases[data["base"]],
            hyperparameters=hyperparameters,
            dp=dp,
            label_field=data["label_field"],
            purpose=data["purpose"],
        )

    def add_domain_error(self, error: Invalid | Conflict) -> None:
        placed = False
        for item in error.errors:
            pointer = item["pointer"]
            name = self.FIELD_OF_POINTER.get(pointer) or pointer.removeprefix("/hyperparameters/")
            if name in self.fields:
                self.add_error(name, item["detail"])
                placed = True
        if not placed:
            self.add_error(None, error.detail)


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
        try:
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
            messages.success(request, f"Job {job.pk} is queued.")
            return redirect("training:job", job_id=job.pk)
    templates = [t.as_dict() for t in TEMPLATES.values()]
    return render(request, "training/job_new.html", {"form": form, "templates": templates})


def _job_context(job: TrainingJob, membership: Membership) -> dict[str, Any]:
    percent = min(100, job.step * 100 // job.total_steps) if job.total_steps else None
    return {
        "job": job,
        "membership": membership,
        "can_act": role_at_least(membership.role, Role.MEMBER),
        "chart": loss_chart(job.loss_curve or []),
        "percent": percent,
        "polling": not job.is_final,
        "poll_seconds": POLL_SECONDS,
        "validation": (job.metrics or {}).get("validation", []),
        "final_metrics": (job.metrics or {}).get("final", {}),
        "events": list(job.events.all()),
    }


@otp.signed_in
@require_GET
def job_page(request: HttpRequest, job_id: int) -> HttpResponse:
    job, membership = _job_for(request, job_id)
    return render(request, "training/job.html", _job_context(job, membership))


@otp.signed_in
@require_GET
def job_status(request: HttpRequest, job_id: int) -> HttpResponse:
    """The live part of the job page (htmx polls it until the job ends)."""
    job, membership = _job_for(request, job_id)
    shown = request.GET.get("state")
    if request.headers.get("HX-Request") and shown and shown != job.state and job.is_final:
        response = HttpResponse(status=204)
        response["HX-Refresh"] = "true"
        return response
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
    return redirect("training:job", job_id=job_id)


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
        messages.success(request, f"Job {job_id}: cancel requested.")
    return redirect("training:ops_jobs")
