"""Who contributes to a version: the owner and the provider organisations its admins invited."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, Q, Sum

from common.models import Organisation
from custody.models import Contribution, ContributionState, VersionContributor
from custody.pages.access import VersionAccess


@dataclass(frozen=True)
class ContributorRow:
    """One contributing organisation of a version and what it uploaded there."""

    organisation_id: int
    organisation_public_id: str
    name: str
    is_owner: bool
    invited_by: str
    invited_at: datetime
    files: int
    files_unfinished: int
    bytes_received: int
    records: int


def contributor_rows(access: VersionAccess) -> list[ContributorRow]:
    """The version's contributors, the owner first, with their uploads (two queries).

    Only the owner sees the list: an invited organisation learns nothing about
    the others' uploads beyond what the version page already shows it.
    """
    if not access.is_owner:
        return []
    version = access.version
    uploads = {
        row["contributor_id"]: row
        for row in Contribution.objects.filter(version=version)
        .values("contributor_id")
        .annotate(
            files=Count("pk"),
            files_unfinished=Count("pk", filter=Q(state=ContributionState.UPLOADING)),
            bytes_received=Sum("size_received"),
            records=Sum("records"),
        )
        .order_by()
    }
    contributors = (
        VersionContributor.objects.filter(version=version)
        .select_related("organisation", "invited_by")
        .order_by("created_at", "pk")
    )
    owner_id = version.dataset.owner_id
    rows = [_row(c, uploads.get(c.organisation_id, {}), owner_id) for c in contributors]
    return sorted(rows, key=lambda r: not r.is_owner)


def _row(contributor: VersionContributor, uploads: dict[str, Any], owner_id: int) -> ContributorRow:
    return ContributorRow(
        organisation_id=contributor.organisation_id,
        organisation_public_id=contributor.organisation.public_id,
        name=contributor.organisation.name,
        is_owner=contributor.organisation_id == owner_id,
        invited_by=contributor.invited_by.get_username() if contributor.invited_by else "",
        invited_at=contributor.created_at,
        files=uploads.get("files") or 0,
        files_unfinished=uploads.get("files_unfinished") or 0,
        bytes_received=uploads.get("bytes_received") or 0,
        records=uploads.get("records") or 0,
    )


def organisation_named(text: str) -> Organisation | None:
    """The organisation whose name or short name (slug) is ``text``, ignoring case."""
    text = text.strip()
    if not text:
        return None
    return Organisation.objects.filter(Q(name__iexact=text) | Q(slug__iexact=text)).first()
