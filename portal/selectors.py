"""Reads that span the apps: the organisation dashboard and the provider's data access log.

Every function costs a fixed number of queries whatever the number of rows:
counts are grouped in the database, lists are cut to a page before anything
is joined to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Case, Count, OuterRef, QuerySet, Subquery, TextChoices, Value, When
from django.db.models.functions import Coalesce

from common.models import Organisation
from custody import selectors as custody_selectors
from custody.models import Contribution, Dataset, DatasetVersion, GrantJob, VersionContributor, VersionState
from marketplace import selectors_orders
from marketplace.models import License, LicenseState, Listing, ListingState, Order, OrderState
from marketplace.services import statements
from training.models import JobState, TrainingJob

RECENT = 5
# Versions that wait for their provider, or are on their way there.
UNFINISHED_VERSION_STATES = (
    VersionState.UPLOADING,
    VersionState.PROCESSING,
    VersionState.REVIEW,
    VersionState.FAILED,
)
ACCESS_LOG_HEADER = [
    "reserved_at",
    "licensee_id",
    "licensee",
    "dataset",
    "version_id",
    "version",
    "grant_id",
    "license",
    "order",
    "purposes",
    "consumer_ref",
    "started_at",
    "stream_opens",
    "first_stream_open_at",
    "tokens_trained",
    "grant_state",
    "tokens_by_contribution",
]


@dataclass(frozen=True)
class StateCount:
    state: str
    label: str
    count: int


def _state_counts(rows: Iterable[dict[str, Any]], choices: type[TextChoices]) -> list[StateCount]:
    """Counts per state in the order the states are declared, leaving out states with none."""
    counts = {row["state"]: row["n"] for row in rows}
    return [StateCount(value, label, counts[value]) for value, label in choices.choices if counts.get(value)]


@dataclass(frozen=True)
class ProviderSummary:
    datasets: int
    versions_by_state: list[StateCount]
    unfinished_versions: list[DatasetVersion]
    listings_by_state: list[StateCount]
    orders_pending: int
    recent_orders: list[Order]
    earnings_by_listing: dict[str, int]
    recent_access: list[AccessRow]
    contributions_invited: list[VersionContributor]


@dataclass(frozen=True)
class TrainerSummary:
    jobs_by_state: list[StateCount]
    recent_jobs: list[TrainingJob]
    licenses_active: int
    recent_orders: list[Order]


def provider_summary(*, organisation: Organisation) -> ProviderSummary:
    """What a provider organisation holds and sells, at a glance."""
    versions = DatasetVersion.objects.filter(dataset__owner=organisation)
    listings = Listing.objects.filter(provider=organisation)
    orders = selectors_orders.order_list_for_provider(organisation=organisation)
    return ProviderSummary(
        datasets=Dataset.objects.filter(owner=organisation).count(),
        versions_by_state=_state_counts(
            versions.values("state").annotate(n=Count("pk")).order_by(), VersionState
        ),
        unfinished_versions=list(
            versions.filter(state__in=UNFINISHED_VERSION_STATES)
            .select_related("dataset")
            .order_by("-created_at", "-pk")[:RECENT]
        ),
        listings_by_state=_state_counts(
            listings.values("state").annotate(n=Count("pk")).order_by(), ListingState
        ),
        orders_pending=orders.filter(state=OrderState.PENDING).count(),
        recent_orders=list(orders[:RECENT]),
        earnings_by_listing=statements.earnings_by_listing(holder=organisation),
        recent_access=access_rows(
            list(custody_selectors.access_log_for_org(organisation=organisation)[:RECENT])
        ),
        contributions_invited=contributions_invited(organisation=organisation),
    )


def contributions_invited(*, organisation: Organisation, limit: int = 10) -> list[VersionContributor]:
    """Other providers' versions the organisation was invited to contribute to, open ones first.

    Each row has its version, dataset, owner and inviter joined, and ``my_files``:
    how many files the organisation has uploaded there (one query in all).
    """
    my_files = (
        Contribution.objects.filter(version=OuterRef("version"), contributor=organisation)
        .order_by()
        .values("version")
        .annotate(n=Count("pk"))
        .values("n")
    )
    open_first = Case(When(version__state=VersionState.UPLOADING, then=Value(0)), default=Value(1))
    return list(
        VersionContributor.objects.filter(organisation=organisation)
        .exclude(version__dataset__owner=organisation)
        .select_related("version__dataset__owner", "invited_by")
        .annotate(my_files=Coalesce(Subquery(my_files), 0), open_first=open_first)
        .order_by("open_first", "-created_at", "-pk")[:limit]
    )


def trainer_summary(*, organisation: Organisation) -> TrainerSummary:
    """What a trainer organisation bought and runs, at a glance."""
    jobs = TrainingJob.objects.filter(organisation=organisation)
    return TrainerSummary(
        jobs_by_state=_state_counts(jobs.values("state").annotate(n=Count("pk")).order_by(), JobState),
        recent_jobs=list(
            jobs.select_related("grant__version__dataset").order_by("-created_at", "-pk")[:RECENT]
        ),
        licenses_active=License.objects.filter(licensee=organisation, state=LicenseState.ACTIVE).count(),
        recent_orders=list(selectors_orders.order_list_for_buyer(organisation=organisation)[:RECENT]),
    )


@dataclass(frozen=True)
class AccessRow:
    """One job a licensee ran on one of the provider's versions."""

    job: GrantJob
    license: License | None
    stream_opens: list[datetime]
    # Platform tokens the job read per contribution (custody's metering, issue 15 item 1).
    reads: list[custody_selectors.ContributionRead] = field(default_factory=list)

    @property
    def grant(self) -> Any:
        return self.job.grant

    @property
    def tokens_trained(self) -> int | None:
        value = getattr(self.job, "tokens_trained", None)
        return None if value is None else int(value)

    @property
    def started_at(self) -> datetime | None:
        value: datetime | None = getattr(self.job, "started_at", None)
        return value

    @property
    def purposes(self) -> str:
        purposes = self.job.grant.terms.get("purposes") or []
        return ", ".join(str(p) for p in purposes) if isinstance(purposes, list) else str(purposes)

    def as_csv(self) -> list[Any]:
        grant = self.job.grant
        return [
            self.job.created_at.isoformat(),
            grant.licensee.public_id if grant.licensee else "",
            grant.licensee.name if grant.licensee else "",
            grant.version.dataset.name,
            grant.version.public_id,
            grant.version.number,
            grant.public_id,
            self.license.ref if self.license else "",
            self.license.order.ref if self.license else "",
            self.purposes,
            self.job.consumer_ref,
            self.started_at.isoformat() if self.started_at else "",
            len(self.stream_opens),
            self.stream_opens[0].isoformat() if self.stream_opens else "",
            "" if self.tokens_trained is None else self.tokens_trained,
            grant.state,
            "; ".join(f"{read.public_id}:{read.tokens}" for read in self.reads),
        ]


def balances(*, organisation: Organisation) -> list[dict[str, Any]]:
    """The organisation's spendable balance and what it is owed, per currency (one query per account)."""
    return selectors_orders.balances_for_org(organisation=organisation)


def access_log(*, organisation: Organisation) -> QuerySet[GrantJob]:
    """The provider's access log, newest first (page it, then pass the page to :func:`access_rows`)."""
    return custody_selectors.access_log_for_org(organisation=organisation)


def access_rows(jobs: Sequence[GrantJob]) -> list[AccessRow]:
    """The jobs of one page with their licenses, stream opens and reads (three queries for the page)."""
    grant_ids = {job.grant_id for job in jobs}
    licenses = {
        lic.grant_id: lic for lic in License.objects.filter(grant_id__in=grant_ids).select_related("order")
    }
    opens = custody_selectors.stream_opens_for(jobs=jobs)
    reads = custody_selectors.usage_reads_for(jobs=jobs)
    return [
        AccessRow(
            job=job,
            license=licenses.get(job.grant_id),
            stream_opens=opens.get((job.grant_id, job.consumer_ref), []),
            reads=reads.get((job.grant_id, job.consumer_ref), []),
        )
        for job in jobs
    ]


def access_rows_all(*, organisation: Organisation, chunk: int = 500) -> Iterator[AccessRow]:
    """Every row of the access log, oldest first, fetched a chunk at a time (for the CSV export)."""
    jobs = access_log(organisation=organisation).order_by("pk")
    last = 0
    while True:
        batch = list(jobs.filter(pk__gt=last)[:chunk])
        if not batch:
            return
        yield from access_rows(batch)
        last = batch[-1].pk
