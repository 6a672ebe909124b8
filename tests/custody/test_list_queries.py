"""Custody's list pages and endpoints: the same queries for 3 or 9 rows, and a page-size bound."""

from __future__ import annotations

from itertools import count
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
from tests.factories import OrganisationFactory
from tests.list_queries import (
    PAGE,
    N,
    assert_api_bounded,
    assert_page_bounded,
    load,
    measure,
    sealed_version,
    signed_in,
)

pytestmark = pytest.mark.django_db

SERIAL = count(1)


def add_datasets(owner: Organisation, k: int) -> None:
    """``k`` datasets, each with two versions (the list shows the latest and a count)."""
    for _ in range(k):
        name = f"Corpus {next(SERIAL)}"
        dataset = Dataset.objects.create(owner=owner, name=name, slug=slugify(name))
        DatasetVersion.objects.bulk_create(DatasetVersion(dataset=dataset, number=n) for n in (1, 2))


def add_versions(dataset: Dataset, k: int) -> None:
    start = dataset.versions.count() + 1
    DatasetVersion.objects.bulk_create(
        DatasetVersion(dataset=dataset, number=n, state=VersionState.REVIEW) for n in range(start, start + k)
    )


def add_contributions(version: DatasetVersion, contributor: Organisation, by: User, k: int) -> None:
    """``k`` uploads from ``contributor`` (a new invited provider each time, so each row has its own org)."""
    for _ in range(k):
        other = cast(Organisation, OrganisationFactory(name=f"Contributor {next(SERIAL)}", is_provider=True))
        VersionContributor.objects.create(version=version, organisation=other)
        for org in (contributor, other):
            Contribution.objects.create(
                version=version,
                contributor=org,
                uploaded_by=by,
                filename=f"part-{next(SERIAL)}.jsonl",
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
        _few, many = measure(
            lambda: load(client, reverse("custody:datasets")), lambda k: add_datasets(acme, k), "dataset list"
        )
        assert_page_bounded(many, rows=3 * N)

    def test_the_version_list_is_flat_and_paginated(self, alice, acme, monkeypatch):
        monkeypatch.setattr(dataset_pages, "VERSIONS_PER_PAGE", PAGE)
        dataset = Dataset.objects.create(owner=acme, name="Many versions", slug="many-versions")
        client = signed_in(alice)
        url = reverse("custody:dataset", args=[dataset.pk])
        _few, many = measure(lambda: load(client, url), lambda k: add_versions(dataset, k), "version list")
        assert_page_bounded(many, rows=3 * N)

    def test_the_upload_list_of_a_version_is_flat(self, alice, acme):
        version = DatasetVersion.objects.create(
            dataset=Dataset.objects.create(owner=acme, name="Uploads", slug="uploads"), number=1
        )
        client = signed_in(alice)
        url = reverse("custody:version", args=[version.pk])
        measure(lambda: load(client, url), lambda k: add_contributions(version, acme, alice, k), "uploads")

    def test_the_findings_table_is_flat_and_paginated(self, alice, reviewed, monkeypatch):
        monkeypatch.setattr(report_pages, "FINDINGS_PER_PAGE", PAGE)
        client = signed_in(alice)
        url = reverse("custody:report", args=[reviewed.pk])
        _few, many = measure(lambda: load(client, url), lambda k: add_findings(reviewed, k), "findings")
        assert_page_bounded(many, rows=3 * N)


class TestCustodyApi:
    def test_the_dataset_list_is_flat_and_paginated(self, alice, acme, token_for):
        client = token_for(alice, acme, ["read"])
        url = reverse("api-datasets")
        _few, many = measure(
            lambda: load(client, url, {"page_size": PAGE}), lambda k: add_datasets(acme, k), "api datasets"
        )
        assert_api_bounded(many, rows=3 * N)

    def test_the_findings_list_is_flat_and_paginated(self, alice, acme, reviewed, token_for):
        client = token_for(alice, acme, ["read"])
        url = reverse("api-version-findings", args=[reviewed.pk])
        _few, many = measure(
            lambda: load(client, url, {"page_size": PAGE}),
            lambda k: add_findings(reviewed, k),
            "api findings",
        )
        assert_api_bounded(many, rows=3 * N)

    def test_the_key_list_is_flat_and_paginated(self, ops, acme):
        client = signed_in(ops, otp=True)
        existing = DatasetVersion.objects.count()

        def more_versions(k: int) -> None:
            for _ in range(k):
                sealed_version(OrganisationFactory(name=f"Owner {next(SERIAL)}"), f"Keyed {next(SERIAL)}")

        url = reverse("api-ops-keys")
        _few, many = measure(lambda: load(client, url, {"page_size": PAGE}), more_versions, "api keys")
        assert_api_bounded(many, rows=existing + 3 * N)
