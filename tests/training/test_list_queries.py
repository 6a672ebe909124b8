"""Training's list pages and endpoints: the same queries for 3 or 9 jobs, bases or licenses; paginated."""

from __future__ import annotations

from itertools import count

import pytest
from django.urls import reverse

from common.models import Organisation
from tests.grants import grant_for_test
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
from training import pages
from training.models import BaseKind, BaseModel, BaseState, BaseTask, JobEvent, TrainingJob

pytestmark = pytest.mark.django_db

SERIAL = count(1)


def add_jobs(organisation: Organisation, provider: Organisation, k: int) -> list[TrainingJob]:
    """``k`` jobs, each under its own license on its own dataset, with a few events each."""
    tiny = BaseModel.objects.get(name="gpt2-tiny", owner=None)
    jobs = []
    for _ in range(k):
        n = next(SERIAL)
        grant = grant_for_test(sealed_version(provider, f"Corpus {n}"), organisation, max_jobs=5)
        job = TrainingJob.objects.create(
            organisation=organisation, grant=grant, template="causal_lm", base=tiny
        )
        JobEvent.objects.bulk_create(JobEvent(job=job, kind="queued", detail=f"event {i}") for i in range(3))
        jobs.append(job)
    return jobs


class TestJobPages:
    def test_the_job_list_is_flat_and_paginated(self, bob, bolt, acme, monkeypatch):
        monkeypatch.setattr(pages, "JOBS_PER_PAGE", PAGE)
        client = signed_in(bob)
        _few, many = measure(
            lambda: load(client, reverse("training:jobs")), lambda k: add_jobs(bolt, acme, k), "job list"
        )
        assert_page_bounded(many, rows=3 * N)

    def test_the_oversight_list_is_flat_and_paginated(self, ops, bolt, acme, monkeypatch):
        monkeypatch.setattr(pages, "OPS_JOBS_PER_PAGE", PAGE)
        client = signed_in(ops, otp=True)
        _few, many = measure(
            lambda: load(client, reverse("training:ops_jobs")), lambda k: add_jobs(bolt, acme, k), "ops jobs"
        )
        assert_page_bounded(many, rows=3 * N)

    def test_a_job_page_costs_the_same_for_few_or_many_events(self, bob, bolt, acme):
        job = add_jobs(bolt, acme, 1)[0]
        client = signed_in(bob)

        def more_events(k: int) -> None:
            JobEvent.objects.bulk_create(
                JobEvent(job=job, kind="progress", detail=f"more {i}") for i in range(k)
            )

        measure(lambda: load(client, reverse("training:job", args=[job.pk])), more_events, "job events")

    def test_the_new_job_form_lists_licenses_in_flat_queries(self, bob, bolt, acme):
        client = signed_in(bob)

        def more_licenses(k: int) -> None:
            for _ in range(k):
                grant_for_test(sealed_version(acme, f"Licensed {next(SERIAL)}"), bolt, max_jobs=1)

        measure(lambda: load(client, reverse("training:job_new")), more_licenses, "job form licenses")


class TestTrainingApi:
    def test_the_job_list_is_flat_and_paginated(self, bob, bolt, acme, token_for):
        client = token_for(bob, bolt, ["read"])
        url = reverse("api-training-jobs")
        _few, many = measure(
            lambda: load(client, url, {"page_size": PAGE}), lambda k: add_jobs(bolt, acme, k), "api jobs"
        )
        assert_api_bounded(many, rows=3 * N)

    def test_the_base_list_is_flat_and_paginated(self, bob, bolt, token_for):
        client = token_for(bob, bolt, ["read"])
        builtin = BaseModel.objects.filter(owner=None).count()

        def more_bases(k: int) -> None:
            BaseModel.objects.bulk_create(
                BaseModel(
                    name=f"upload {next(SERIAL)}",
                    kind=BaseKind.UPLOADED,
                    task=BaseTask.CAUSAL_LM,
                    owner=bolt,
                    state=BaseState.VALIDATED,
                )
                for _ in range(k)
            )

        url = reverse("api-training-bases")
        _few, many = measure(lambda: load(client, url, {"page_size": PAGE}), more_bases, "api bases")
        assert_api_bounded(many, rows=builtin + 3 * N)

    def test_the_license_list_is_flat_and_paginated(self, bob, bolt, acme, token_for):
        client = token_for(bob, bolt, ["read"])

        def more_licenses(k: int) -> None:
            for _ in range(k):
                grant_for_test(sealed_version(acme, f"Licensed {next(SERIAL)}"), bolt, max_jobs=1)

        url = reverse("api-training-licenses")
        _few, many = measure(lambda: load(client, url, {"page_size": PAGE}), more_licenses, "api licenses")
        assert_api_bounded(many, rows=3 * N)
