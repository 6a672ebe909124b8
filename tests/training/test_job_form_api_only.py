"""The portal job form offers only the templates it can submit (issue 16/17 leftovers): generation
and distillation start from a model held in custody and take fields the form does not have, so
the form does not offer them, says where to submit them, and refuses them if posted anyway."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from tests.grants import grant_for_test
from tests.training.test_pages import form_data
from training.forms import API_ONLY_TEMPLATES
from training.models import JobTemplate, TrainingJob

pytestmark = pytest.mark.django_db


@pytest.fixture
def bob_client(bob) -> Client:
    client = Client()
    client.force_login(bob)
    return client


def template_options(html: str) -> list[str]:
    select = re.search(r'<select name="template".*?</select>', html, re.DOTALL)
    assert select is not None
    return re.findall(r'<option value="([^"]+)"', select.group(0))


def test_the_form_offers_only_templates_it_can_submit(bob_client, grant):
    html = bob_client.get("/training/jobs/new/").content.decode()
    offered = template_options(html)
    assert offered == [t for t in JobTemplate.values if t not in API_ONLY_TEMPLATES]
    assert {"causal_lm", "seq_classification", "valuation"} <= set(offered)
    assert not {"generate", "distill_causal_lm", "distill_classification"} & set(offered)
    # The templates list still describes them, with where to submit them.
    assert html.count("data-api-only") == 3
    assert "POST /api/v1/training/jobs</code> with <code>custody_model" in html


def test_a_posted_api_only_template_is_refused_on_its_field(bob_client, grant, tiny):
    accepted = bob_client.post("/training/jobs/new/", form_data(grant, tiny))  # positive control
    assert accepted.status_code == 302
    for template in sorted(API_ONLY_TEMPLATES):
        response = bob_client.post("/training/jobs/new/", form_data(grant, tiny, template=template))
        assert response.status_code == 200
        assert "Select a valid choice" in response.content.decode()
    assert TrainingJob.objects.count() == 1


def test_the_form_starts_on_an_offered_template(bob, bolt, sealed_version, bob_client):
    grant_for_test(sealed_version, bolt, job_templates=["generate", "seq_classification"])
    html = bob_client.get("/training/jobs/new/").content.decode()
    selected = re.search(r'<option value="([^"]+)"[^>]*selected', html.split('name="template"', 1)[1])
    assert selected is not None and selected.group(1) == "seq_classification"
