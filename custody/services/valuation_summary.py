"""A valuation's published aggregates kept on the version (issue 15 item 3).

The launcher records the aggregates of an **owner's** valuation (grant purpose ``valuation``)
here when the job finishes; marketplace reads them for the price suggestion on the listing draft
and for a value-weighted rights proposal. ``marketplace`` and ``training`` never import each
other, so custody is the meeting point. A trainer's valuation under a license is the trainer's
own result and is not recorded (its validation set and purpose are the trainer's).

Only aggregates that already left the sandbox are stored: groups of at least ``min_group``
records (contributions smaller than that are pooled as ``other`` or not reported at all), and
the summary. The launcher names each group ``contribution-<key>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from django.db.models import Sum

from common.audit import audit_record
from custody.models import Contribution, DatasetVersion, Shard, ValuationSummary

__all__ = [
    "ContributionValues",
    "contribution_values",
    "valuation_summary_latest",
    "valuation_summary_record",
]

GROUP_PREFIX = "contribution-"


def valuation_summary_record(
    *, version: DatasetVersion, job_ref: str, published: Mapping[str, Any]
) -> ValuationSummary:
    """Keep a finished valuation's published aggregates (idempotent per job). Call it inside the
    transaction that finishes the job, so a job is never succeeded without its summary."""
    groups = published.get("groups") if isinstance(published.get("groups"), Mapping) else {}
    kept: dict[str, dict[str, Any]] = {}
    for name, group in (groups or {}).items():
        key = str(name).removeprefix(GROUP_PREFIX) if str(name).startswith(GROUP_PREFIX) else str(name)
        kept[key] = dict(group)
    tokens = Shard.objects.filter(version=version).aggregate(t=Sum("tokens"))["t"] or 0
    summary, created = ValuationSummary.objects.get_or_create(
        job_ref=job_ref,
        defaults={
            "version": version,
            "groups": kept,
            "summary": dict(published.get("summary") or {}),
            "min_group": int(published.get("min_group") or 0),
            "tokens": int(tokens),
        },
    )
    if created:
        audit_record(
            action="custody.valuation_summary",
            organisation=version.dataset.owner,
            object_type="dataset_version",
            object_id=version.pk,
            details={"job": job_ref, "groups": len(kept), "tokens": int(tokens)},
        )
    return summary


def valuation_summary_latest(*, version: DatasetVersion) -> ValuationSummary | None:
    """The newest valuation of ``version`` made since it was sealed (an earlier one, made in review,
    may count records that were dropped at sealing); ``None`` when there is none."""
    rows = ValuationSummary.objects.filter(version=version)
    if version.sealed_at is not None:
        rows = rows.filter(valued_at__gte=version.sealed_at)
    return rows.order_by("-valued_at", "-pk").first()


@dataclass(frozen=True)
class ContributionValues:
    """Per contributing organisation: the sum of its contributions' totals, each clipped at zero."""

    by_organisation: dict[int, Fraction]
    # Contributing organisations with a contribution the valuation did not report by itself
    # (fewer than min_group records: pooled in "other" or suppressed).
    unreported: set[int]
    # Contributions whose negative total was counted as zero: contribution key -> its total.
    clipped: dict[int, float]


def contribution_values(summary: ValuationSummary) -> ContributionValues:
    """Each contributing organisation's value from the valuation's per-contribution totals.

    A contribution's total is the sum of its records' values (scaled as the runner publishes
    them); a negative total counts as zero. Exact: totals are read as decimals, not floats.
    """
    contributions = dict(
        Contribution.objects.filter(version_id=summary.version_id, shards__isnull=False)
        .distinct()
        .values_list("pk", "contributor_id")
    )
    values: dict[int, Fraction] = {org: Fraction(0) for org in contributions.values()}
    unreported: set[int] = set()
    clipped: dict[int, float] = {}
    for contribution, org in contributions.items():
        group = summary.groups.get(str(contribution))
        if not isinstance(group, Mapping) or not isinstance(group.get("sum"), int | float):
            unreported.add(org)
            continue
        total = Fraction(str(group["sum"]))
        if total < 0:
            clipped[contribution] = float(group["sum"])
            continue
        values[org] += total
    return ContributionValues(by_organisation=values, unreported=unreported, clipped=clipped)
