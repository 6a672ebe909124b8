"""Custody's list pages and endpoints: the same queries for 3 or 9 rows, and a page-size bound."""

from __future__ import annotations

from functools import partial
from typing import cast

import pytest
from django.urls import reverse
from django.utils.text import slugify

from common.models import Organisation, User
from custody.models import (
    Contribution,
    ContributionState,
    Dataset,
    DatasetVersion,
    Finding,
    Report,
    VersionContributor,
    VersionState,
)
from custody.pages import datasets as dataset_pages
from custody.pages import report as report_pages
from custody.pages import versions as version_pages
from tests.factories import OrganisationFactory
from tests.list_queries import (
    PAGE,
    N,
    add_sealed_versions,
    load,
    measure_api,
    measure_page,
    next_link,
    serial,
    signed_in,
)

pytestmark = pytest.mark.django_db


def add_datasets(owner: Organisation, k: int) -> None:
    """``k`` datasets, each with two versions (the list shows the latest and a count)."""
    for _ in range(k):
        name = f"Corpus {serial()}"
        dataset = Dataset.objects.create(owner=owner, name=name, slug=slugify(name))
        DatasetVersion.objects.bulk_create(DatasetVersion(dataset=dataset, number=n) for n in (1, 2))


def add_versions(dataset: Dataset, k: int) -> None:
    start = dataset.versions.count() + 1
    DatasetVersion.objects.bulk_create(
        DatasetVersion(dataset=dataset, number=n, state=VersionState.REVIEW) for n in range(start, start + k)
    )


def add_contributions(version: DatasetVersion, contributor: Organisation, by: User, k: int) -> None:
    """``k`` uploads from ``contributor`` and ``k`` from invited providers (a new org for each)."""
    for _ in range(k):
        other = cast(Organisation, OrganisationFactory(name=f"Contributor {serial()}", is_provider=True))
        VersionContributor.objects.create(version=version, organisation=other)
        for org in (contributor, other):
            Contribution.objects.create(
                version=version,
                contributor=org,
                uploaded_by=by,
                filename=f"part-{serial()}.jsonl",
                format="jsonl",
                state=ContributionState.DONE,
            )


def add_findings(version: DatasetVersion, k: int) -> None:
    start = Finding.objects.filter(version=version).count()
    Finding.objects.bulk_create(
        Finding(version=version, record_id=i, kind="garbage", detail="mostly symbols")
        for i in range(start, start + k)
    )


@pytest.fixture
def reviewed(acme) -> DatasetVersion:
    """A version in review with its report (rows only)."""
    dataset = Dataset.objects.create(owner=acme, name="Reviewed", slug="reviewed")
    version = DatasetVersion.objects.create(dataset=dataset, number=1, state=VersionState.REVIEW)
    Report.objects.create(version=version, counts={}, findings_summary={"garbage": 0})
    return version


class TestCustodyPages:
    def test_the_dataset_list_is_flat_and_paginated(self, alice, acme, monkeypatch):
        monkeypatch.setattr(dataset_pages, "DATASETS_PER_PAGE", PAGE)
        client = signed_in(alice)
        measure_page(client, reverse("custody:datasets"), lambda k: add_datasets(acme, k), "dataset list")

    def test_the_version_list_is_flat_and_paginated(self, alice, acme, monkeypatch):
        monkeypatch.setattr(dataset_pages, "VERSIONS_PER_PAGE", PAGE)
        dataset = Dataset.objects.create(owner=acme, name="Many versions", slug="many-versions")
        client = signed_in(alice)
        url = reverse("custody:dataset", args=[dataset.public_id])
        measure_page(client, url, lambda k: add_versions(dataset, k), "version list")

    @pytest.mark.parametrize("route", ["custody:version", "custody:version_status"])
    def test_the_upload_list_of_a_version_is_flat_and_paginated(self, route, alice, acme, monkeypatch):
        monkeypatch.setattr(version_pages, "UPLOADS_PER_PAGE", PAGE)
        version = DatasetVersion.objects.create(
            dataset=Dataset.objects.create(owner=acme, name="Uploads", slug="uploads"), number=1
        )
        client = signed_in(alice)
        url = reverse(route, args=[version.public_id])
        seed = partial(add_contributions, version, acme, alice)
        measure_page(client, url, seed, "uploads", rows=2 * 3 * N, context_key="contributions")

    def test_the_upload_list_shows_the_newest_first_and_refreshes_the_page_shown(
        self, alice, acme, monkeypatch
    ):
        monkeypatch.setattr(version_pages, "UPLOADS_PER_PAGE", PAGE)
        version = DatasetVersion.objects.create(
            dataset=Dataset.objects.create(owner=acme, name="Uploads", slug="uploads"), number=1
        )
        add_contributions(version, acme, alice, N)
        client = signed_in(alice)
        url = reverse("custody:version", args=[version.public_id])
        first = load(client, url).response.context["contributions"]
        newest = Contribution.objects.filter(version=version).latest("created_at", "pk")
        assert first[0] == newest
        second = load(client, url, {"page": 2}).response
        body = second.content.decode()
        # The status partial that htmx swaps in on an upload asks for the page the user is on.
        assert "?state=uploading&amp;page=2" in body
        assert 'aria-label="Upload pages"' in body and 'href="?page=1"' in body

    def test_the_findings_table_is_flat_and_paginated(self, alice, reviewed, monkeypatch):
        monkeypatch.setattr(report_pages, "FINDINGS_PER_PAGE", PAGE)
        client = signed_in(alice)
        url = reverse("custody:report", args=[reviewed.public_id])
        measure_page(client, url, lambda k: add_findings(reviewed, k), "findings")
        assert next_link(client, url, {"kind": "garbage"}) == "?kind=garbage&page=2#findings"


class TestCustodyApi:
    def test_the_dataset_list_is_flat_and_paginated(self, alice, acme, token_for):
        client = token_for(alice, acme, ["read"])
        measure_api(client, reverse("api-datasets"), lambda k: add_datasets(acme, k), "api datasets")

    def test_the_findings_list_is_flat_and_paginated(self, alice, acme, reviewed, token_for):
        client = token_for(alice, acme, ["read"])
        url = reverse("api-version-findings", args=[reviewed.public_id])
        measure_api(client, url, lambda k: add_findings(reviewed, k), "api findings")

    def test_the_findings_kind_filter_is_checked(self, alice, acme, reviewed, token_for):
        client = token_for(alice, acme, ["read"])
        url = reverse("api-version-findings", args=[reviewed.public_id])
        add_findings(reviewed, 2)
        assert client.get(url, {"kind": "garbage"}).json()["count"] == 2
        assert client.get(url, {"kind": "exact_duplicate"}).json()["count"] == 0
        for kind in ("garbage\x00", "k" * 33):  # NUL was a 500 on Postgres
            refused = client.get(url, {"kind": kind})
            assert refused.status_code == 422, refused.content
            assert refused.json()["errors"][0]["pointer"] == "/kind"

    def test_the_key_list_is_flat_and_paginated(self, ops, acme):
        client = signed_in(ops, otp=True)
        existing = DatasetVersion.objects.count()
        url = reverse("api-ops-keys")
        measure_api(client, url, add_sealed_versions, "api keys", rows=existing + 3 * N)
