"""Reads for custody, scoped to the caller's organisation (anything else is 404)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import F, OuterRef, Q, QuerySet, Subquery

from common.models import AuditEvent, Organisation
from custody.exceptions import NotFound
from custody.models import (
    Contribution,
    Dataset,
    DatasetVersion,
    Finding,
    GrantJob,
    GrantPurpose,
    UsageByContribution,
    UsageKind,
    UsageRecord,
)


def dataset_list_for_org(*, organisation: Organisation) -> QuerySet[Dataset]:
    return Dataset.objects.filter(owner=organisation).order_by("name")


def dataset_get_for_org(*, organisation: Organisation, dataset_id: int) -> Dataset:
    dataset = Dataset.objects.filter(owner=organisation, pk=dataset_id).first()
    if dataset is None:
        raise NotFound("No such dataset.", code="custody.dataset_not_found")
    return dataset


def version_get_for_org(
    *, organisation: Organisation, version_id: int, owner_only: bool = False
) -> DatasetVersion:
    """A version the organisation owns (or contributes to, unless ``owner_only``).

    :raises NotFound: anything else.
    """
    visible = Q(dataset__owner=organisation)
    if not owner_only:
        visible |= Q(contributors__organisation=organisation)
    version = (
        DatasetVersion.objects.select_related("dataset__owner")
        .filter(visible, pk=version_id)
        .distinct()
        .first()
    )
    if version is None:
        raise NotFound("No such dataset version.", code="custody.version_not_found")
    return version


def version_list_for_dataset(*, dataset: Dataset) -> QuerySet[DatasetVersion]:
    return dataset.versions.order_by("-number")


def contribution_get_for_org(*, organisation: Organisation, contribution_id: int) -> Contribution:
    """A contribution the organisation made, or one to a version it owns. :raises NotFound."""
    contribution = (
        Contribution.objects.select_related("version__dataset", "contributor")
        .filter(Q(contributor=organisation) | Q(version__dataset__owner=organisation), pk=contribution_id)
        .first()
    )
    if contribution is None:
        raise NotFound("No such upload.", code="custody.contribution_not_found")
    return contribution


def finding_list(*, version: DatasetVersion, kind: str | None = None) -> QuerySet[Finding]:
    qs = Finding.objects.filter(version=version).order_by("record_id", "kind")
    return qs.filter(kind=kind) if kind else qs


def usage_unsettled_ids(
    *, grant_ids: QuerySet[Any] | list[int], exclude_ids: QuerySet[Any] | None = None, limit: int = 500
) -> list[int]:
    """Unsettled usage records of these grants but not ``exclude_ids``, oldest first (settlement sweep)."""
    unsettled = UsageRecord.objects.filter(grant_id__in=grant_ids, settled_at__isnull=True).order_by("pk")
    if exclude_ids is not None:
        unsettled = unsettled.exclude(pk__in=exclude_ids)
    return list(unsettled.values_list("pk", flat=True)[:limit])


def usage_reads_by_contributor(*, usage: UsageRecord) -> dict[int, int]:
    """Platform tokens a usage record read per contributing organisation ({} when not metered so)."""
    reads: dict[int, int] = {}
    rows = UsageByContribution.objects.filter(usage=usage).values_list(
        "contribution__contributor_id", "quantity"
    )
    for organisation_id, quantity in rows:
        reads[organisation_id] = reads.get(organisation_id, 0) + int(quantity)
    return reads


@dataclass(frozen=True)
class ContributionRead:
    """What one job read from one contribution (the access log and the receipt show these)."""

    contribution_id: int
    public_id: str
    contributor: str
    filename: str
    tokens: int


def usage_reads_for(*, jobs: Sequence[GrantJob]) -> dict[tuple[int, str], list[ContributionRead]]:
    """Each job's platform tokens read per contribution, keyed by (grant id, consumer_ref); one query."""
    wanted = {(job.grant_id, job.consumer_ref) for job in jobs}
    if not wanted:
        return {}
    rows = (
        UsageByContribution.objects.filter(
            usage__grant_id__in=sorted({grant_id for grant_id, _ in wanted}),
            usage__kind=UsageKind.TOKENS_TRAINED,
        )
        .select_related("contribution__contributor", "usage")
        .order_by("contribution_id")
    )
    reads: dict[tuple[int, str], list[ContributionRead]] = {}
    for row in rows:
        key = (row.usage.grant_id, row.usage.consumer_ref)
        if key in wanted:
            reads.setdefault(key, []).append(
                ContributionRead(
                    contribution_id=row.contribution_id,
                    public_id=row.contribution.public_id,
                    contributor=row.contribution.contributor.name,
                    filename=row.contribution.filename,
                    tokens=int(row.quantity),
                )
            )
    return reads


def access_log_for_org(*, organisation: Organisation) -> QuerySet[GrantJob]:
    """Jobs run under license grants on versions the organisation owns or contributes to, newest first.

    Each row has its grant, licensee and version joined, and two annotations
    from the usage records: ``tokens_trained`` (platform tokens, or None while
    unrecorded) and ``started_at`` (when the job started reading, or None).
    """
    versions = DatasetVersion.objects.filter(
        Q(dataset__owner=organisation) | Q(contributors__organisation=organisation)
    ).values("pk")
    usage = UsageRecord.objects.filter(grant=OuterRef("grant"), consumer_ref=OuterRef("consumer_ref"))
    return (
        GrantJob.objects.filter(grant__purpose=GrantPurpose.LICENSE, grant__version__in=versions)
        .select_related("grant__licensee", "grant__version__dataset")
        .annotate(
            tokens_trained=Subquery(usage.filter(kind=UsageKind.TOKENS_TRAINED).values("quantity")[:1]),
            started_at=Subquery(usage.filter(kind=UsageKind.JOB_STARTED).values("created_at")[:1]),
        )
        .order_by("-created_at", "-pk")
    )


def stream_opens_for(*, jobs: Sequence[GrantJob]) -> dict[tuple[int, str], list[datetime]]:
    """When each job opened its grant's stream (the ``custody.stream_open`` audit events), oldest first.

    One query for any number of jobs; keyed by (grant id, consumer_ref).
    """
    wanted = {(job.grant_id, job.consumer_ref) for job in jobs}
    if not wanted:
        return {}
    events = (
        AuditEvent.objects.filter(
            action="custody.stream_open",
            object_type="grant",
            object_id__in=sorted({str(grant_id) for grant_id, _ in wanted}),
        )
        # Events the audit sequencer has not integrated yet (no seq) are the newest.
        .order_by(F("seq").asc(nulls_last=True), "id")
        .values_list("object_id", "at", "details")
    )
    opens: dict[tuple[int, str], list[datetime]] = {}
    for object_id, at, details in events:
        key = (int(object_id), str(details.get("consumer_ref", "")))
        if key in wanted:
            opens.setdefault(key, []).append(at)
    return opens
