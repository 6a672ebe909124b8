# ruff: noqa: F811  (fixtures imported from the model-license tests)
"""The portal's generation form offers another organisation's model to a holder of a model license
on it whose terms allow generation, and submits under that license; a license without
``generation_allowed`` keeps the model off the form (issue 16, a licensee's generation)."""

from __future__ import annotations

import pytest
from django.test import Client

from custody.models import Grant, GrantState
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from tests.marketplace.orders.conftest import fund  # noqa: F401
from tests.training.test_generate_pages import URL, form, offered
from tests.training.test_model_license_use import buy, dan, dan_api, dyna, model, tiny  # noqa: F401
from training.models import JobState, JobTemplate, TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def dan_client(dan) -> Client:
    client = Client()
    client.force_login(dan)
    return client


def test_a_licensed_model_that_may_generate_is_offered_and_submits_under_its_license(
    dan_client, buy, model, dyna
):
    license_ = buy(generation_allowed=True)
    assert offered(dan_client.get(URL).content.decode()) == [model.public_id]
    response = dan_client.post(URL, form(model))
    assert response.status_code == 302, response.content.decode()[:2000]
    job = TrainingJob.objects.get(template=JobTemplate.GENERATE)
    assert job.organisation == dyna and job.custody_model_id == model.pk and job.state == JobState.QUEUED
    assert job.grant_id == license_.pk  # the model license governs the job


def test_a_license_that_does_not_allow_generation_keeps_the_model_off_the_form(dan_client, buy, model):
    buy(distillation_allowed=True)
    assert offered(dan_client.get(URL).content.decode()) == []
    refused = dan_client.post(URL, form(model))
    assert refused.status_code == 422
    assert not TrainingJob.objects.filter(template=JobTemplate.GENERATE).exists()


def test_a_revoked_license_takes_the_model_off_the_form(dan_client, buy, model):
    license_ = buy(generation_allowed=True)
    Grant.objects.filter(pk=license_.pk).update(state=GrantState.REVOKED)
    assert offered(dan_client.get(URL).content.decode()) == []
