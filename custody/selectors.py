"""Reads for custody, scoped to the caller's organisation (anything else is 404)."""

from __future__ import annotations

from django.db.models import Q, QuerySet

from common.models import Organisation
from custody.exceptions import NotFound
from custody.models import Contribution, Dataset, DatasetVersion, Finding


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
