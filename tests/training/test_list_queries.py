"""Training's list pages and endpoints: the same queries for 3 or 9 jobs, bases or licenses; paginated."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.list_queries import (
    PAGE,
    N,
    add_jobs,
    add_licenses,
    load,
    measure,
    measure_api,
    measure_page,
    serial,
    signed_in,
)
from training import pages
from training.models import BaseKind, BaseModel, BaseState, BaseTask, JobEvent

pytestmark = pytest.mark.django_db


class TestJobPages:
    def test_the_job_list_is_flat_and_paginated(self, bob, bolt, acme, monkeypatch):
        monkeypatch.setattr(pages, "JOBS_PER_PAGE", PAGE)
        client = signed_in(bob)
        measure_page(
            client, reverse("training:jobs"), lambda k: add_jobs(bolt, acme, k, events=3), "job list"
        )

    def test_the_oversight_list_is_flat_and_paginated(self, ops, bolt, acme, monkeypatch):
        monkeypatch.setattr(pages, "OPS_JOBS_PER_PAGE", PAGE)
        client = signed_in(ops, otp=True)
        measure_page(
            client, reverse("training:ops_jobs"), lambda k: add_jobs(bolt, acme, k, events=3), "ops jobs"
        )

    def test_a_job_page_costs_the_same_for_few_or_many_events(self, bob, bolt, acme):
        job = add_jobs(bolt, acme, 1, events=3)[0]
        client = signed_in(bob)

        def more_events(k: int) -> None:
            JobEvent.objects.bulk_create(
                JobEvent(job=job, kind="progress", detail=f"more {i}") for i in range(k)
            )

        measure(
            lambda: load(client, reverse("training:job", args=[job.public_id])), more_events, "job events"
        )

    def test_the_new_job_form_lists_licenses_in_flat_queries(self, bob, bolt, acme):
        client = signed_in(bob)
        measure(
            lambda: load(client, reverse("training:job_new")),
            lambda k: add_licenses(acme, bolt, k),
            "job form licenses",
        )


class TestTrainingApi:
    def test_the_job_list_is_flat_and_paginated(self, bob, bolt, acme, token_for):
        client = token_for(bob, bolt, ["read"])
        url = reverse("api-training-jobs")
        measure_api(client, url, lambda k: add_jobs(bolt, acme, k, events=3), "api jobs")

    def test_the_base_list_is_flat_and_paginated(self, bob, bolt, token_for):
        client = token_for(bob, bolt, ["read"])
        builtin = BaseModel.objects.filter(owner=None).count()

        def more_bases(k: int) -> None:
            BaseModel.objects.bulk_create(
                BaseModel(
                    name=f"upload {serial()}",
                    kind=BaseKind.UPLOADED,
                    task=BaseTask.CAUSAL_LM,
                    owner=bolt,
                    state=BaseState.VALIDATED,
                )
                for _ in range(k)
            )

        measure_api(client, reverse("api-training-bases"), more_bases, "api bases", rows=builtin + 3 * N)

    def test_the_license_list_is_flat_and_paginated(self, bob, bolt, acme, token_for):
        client = token_for(bob, bolt, ["read"])
        url = reverse("api-training-licenses")
        measure_api(client, url, lambda k: add_licenses(acme, bolt, k), "api licenses")
