"""A new trainer, in the browser: submits a generation job from the portal's generation form.

The trainer signs up and holds a model in custody (a succeeded job whose weights stay in custody,
under a license that names ``generate``). From the model's job page it follows the link to the
generation form, with the model chosen; a record count past the API's limit is answered on that
field; the corrected form queues the job and lands on the job page. The job form links to the
generation form too.
"""

from __future__ import annotations

import re

import pytest

from common import services as common_services
from common.models import Membership, User
from tests.grants import grant_for_test
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from training.models import BaseModel, JobState, JobTemplate, TrainingJob

pytestmark = pytest.mark.browser

PASSWORD = "a long and quiet harbour"
TERMS = {
    "purposes": ["research"],
    "job_templates": ["causal_lm", "generate"],
    "max_jobs": 5,
    "max_tokens": 1_000_000,
    "max_epochs": 3,
    "weights_may_leave": False,
    "gate_max_exposure": 20.0,
}


def test_a_new_trainer_generates_a_corpus_from_the_portal(
    page,
    shot,
    live_server,
    console_messages,
    acme,
    sealed_rows,  # noqa: F811
):
    common_services.organisation_signup(
        username="greta",
        email="greta@example.test",
        password=PASSWORD,
        organisation_name="Greta Models",
        is_provider=False,
        is_trainer=True,
    )
    greta = User.objects.get(username="greta")
    org = Membership.objects.get(user=greta).organisation
    grant = grant_for_test(sealed_rows(tokens={acme: 6_000}), org, **TERMS)
    model = TrainingJob.objects.create(
        organisation=org,
        submitted_by=greta,
        grant=grant,
        template="causal_lm",
        base=BaseModel.objects.get(name="gpt2-tiny", owner=None),
        state=JobState.SUCCEEDED,
        artifact_encrypted=True,
        artifact_blob_key="custody/artifacts/greta-model",
    )

    page.goto("/login/")
    page.get_by_label("Username").fill("greta")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")

    # The job form points to the generation form.
    page.goto("/training/jobs/new/")
    shot("job-form")
    assert page.get_by_role("link", name="generation form").first.get_attribute("href") == (
        "/training/jobs/generate/"
    )

    # The model's page links to the form with the model chosen.
    page.goto(f"/training/jobs/{model.public_id}/")
    shot("model-page")
    page.get_by_role("link", name="Generate a synthetic corpus from this model").click()
    page.get_by_role("heading", name="New generation job").wait_for()
    assert page.url.endswith(f"/training/jobs/generate/?model={model.public_id}")
    assert page.get_by_label("Model held in custody").input_value() == model.public_id
    assert page.get_by_label("Maximum new tokens per record").input_value() == "48"
    assert page.get_by_label("Temperature").input_value() == "1.0"
    shot("generate-form")

    page.get_by_label("Prompts").fill("Ticket about a late refund\nSummary of the outage\n")
    page.get_by_label("Number of records").fill("20000")
    console_messages.allow(r"status of 422 \(Unprocessable Entity\)")
    page.get_by_role("button", name="Submit generation job").click()
    error = page.locator("#id_records_error")
    error.wait_for()
    assert error.inner_text() == "Must be an integer from 1 to 10,000."
    assert page.locator("#id_prompts_error").count() == 0
    assert page.get_by_label("Prompts").input_value().splitlines() == [
        "Ticket about a late refund",
        "Summary of the outage",
    ]
    shot("generate-error")
    assert not TrainingJob.objects.filter(template=JobTemplate.GENERATE).exists()

    page.get_by_label("Number of records").fill("50")
    page.get_by_label("Temperature").fill("0.7")
    page.get_by_role("button", name="Submit generation job").click()
    page.wait_for_url(re.compile(r".*/training/jobs/job_[0-9a-f]{16}/$"))
    job = TrainingJob.objects.get(template=JobTemplate.GENERATE)
    assert page.url.endswith(f"/training/jobs/{job.public_id}/")
    assert job.custody_model_id == model.pk and job.state == JobState.QUEUED
    assert job.request["generation"] == {
        "prompts": ["Ticket about a late refund", "Summary of the outage"],
        "records": 50,
        "max_new_tokens": 48,
        "temperature": 0.7,
    }
    page.get_by_text(f"Generation job {job.public_id} is queued.").wait_for()
    page.get_by_role("heading", name=re.compile(f"Job {job.public_id}")).wait_for()
    shot("generate-queued")
