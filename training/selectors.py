"""Training's reads: bases, templates and jobs, always scoped to the caller's organisation."""

from __future__ import annotations

from django.db.models import Prefetch, Q, QuerySet

from common.models import Organisation
from custody.models import Grant, GrantPurpose
from training.exceptions import NotFound
from training.models import BaseModel, JobGrant, TrainingJob


def base_list_for_org(*, organisation: Organisation | None) -> QuerySet[BaseModel]:
    """Built-in bases and the organisation's own uploads."""
    mine = Q(owner=organisation) if organisation is not None else Q(pk__in=[])
    return BaseModel.objects.filter(Q(owner__isnull=True) | mine).order_by("kind", "name", "pk")


def base_get_for_org(*, organisation: Organisation | None, base_id: int) -> BaseModel:
    """:raises NotFound: no such base, or another organisation's upload."""
    base = base_list_for_org(organisation=organisation).filter(pk=base_id).first()
    if base is None:
        raise NotFound("No such base model.", code="training.base_not_found")
    return base


def job_list_for_org(*, organisation: Organisation) -> QuerySet[TrainingJob]:
    return (
        TrainingJob.objects.filter(organisation=organisation)
        .select_related("base", "grant", "grant__version__dataset")
        # A mixed job's licenses (issue 17 item 3), one query for the page.
        .prefetch_related(Prefetch("components", queryset=JobGrant.objects.select_related("grant__version")))
        .order_by("-created_at", "-pk")
    )


def job_get_for_org(*, organisation: Organisation, job_id: int) -> TrainingJob:
    """:raises NotFound: no such job, or another organisation's."""
    job = job_list_for_org(organisation=organisation).filter(pk=job_id).first()
    if job is None:
        raise NotFound("No such training job.", code="training.job_not_found")
    return job


def job_list_all() -> QuerySet[TrainingJob]:
    """Every job (operator oversight)."""
    return TrainingJob.objects.select_related("organisation", "base", "grant").order_by("-created_at", "-pk")


def grant_list_for_org(*, organisation: Organisation) -> QuerySet[Grant]:
    """The license grants the organisation holds (what it may submit jobs under)."""
    return (
        Grant.objects.filter(licensee=organisation, purpose=GrantPurpose.LICENSE)
        .select_related("version__dataset")
        .order_by("-created_at", "-pk")
    )


def grant_get_for_org(*, organisation: Organisation, grant_id: int) -> Grant:
    """:raises NotFound: the organisation holds no such license grant."""
    grant = grant_list_for_org(organisation=organisation).filter(pk=grant_id).first()
    if grant is None:
        raise NotFound("No such license.", code="training.license_not_found")
    return grant


def grant_get_for_license_ref(*, organisation: Organisation, license_ref: str) -> Grant:
    """The grant behind a license reference (``lic_...``, what an order returned).

    :raises NotFound: the organisation holds no license with that reference.
    """
    grant = None
    if license_ref:
        grant = grant_list_for_org(organisation=organisation).filter(external_ref=license_ref).first()
    if grant is None:
        raise NotFound(
            "No such license.",
            code="training.license_not_found",
            errors=[{"pointer": "/license", "code": "not_found", "detail": "No such license."}],
        )
    return grant
