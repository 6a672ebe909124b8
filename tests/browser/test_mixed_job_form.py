"""A new trainer, in the browser: mixes two licenses in one job from the portal's job form.

The trainer signs up, holds two licenses on two sealed versions (issued as paid orders issue
them), and submits a 70/30 mixed job: a weight left out and a second license whose terms refuse
the job's purpose are each answered on that license's row; the valid mix is queued as one job
with a component per license.
"""

from __future__ import annotations

import re

import pytest

from common import services as common_services
from common.models import Membership, User
from tests.grants import grant_for_test
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from training.models import BaseModel, JobGrant, TrainingJob

pytestmark = pytest.mark.browser

PASSWORD = "a long and quiet harbour"
TERMS = {
    "purposes": ["research"],
    "job_templates": ["causal_lm", "causal_lm_lora"],
    "max_jobs": 5,
    "max_tokens": 1_000_000,
    "max_epochs": 3,
    "weights_may_leave": True,
    "gate_max_exposure": 20.0,
}


def test_a_new_trainer_mixes_two_licenses_from_the_job_form(
    page,
    shot,
    live_server,
    console_messages,
    acme,
    sealed_rows,  # noqa: F811
):
    common_services.organisation_signup(
        username="tomas",
        email="tomas@example.test",
        password=PASSWORD,
        organisation_name="Tomas Models",
        is_provider=False,
        is_trainer=True,
    )
    tomas = User.objects.get(username="tomas")
    org = Membership.objects.get(user=tomas).organisation
    north = grant_for_test(sealed_rows(tokens={acme: 7_000}), org, **TERMS)
    south = grant_for_test(sealed_rows(tokens={acme: 5_000}), org, **TERMS)
    commercial = grant_for_test(
        sealed_rows(tokens={acme: 5_000}), org, **{**TERMS, "purposes": ["commercial"]}
    )
    tiny = BaseModel.objects.get(name="gpt2-tiny", owner=None)

    page.goto("/login/")
    page.get_by_label("Username").fill("tomas")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Jobs", exact=True).click()
    page.get_by_role("link", name="New job").click()
    page.get_by_role("heading", name="New training job").wait_for()
    page.get_by_label("License", exact=True).select_option(value=north.public_id)
    page.get_by_label("Weight of the license").fill("7")
    page.get_by_label("Mix with a second license").select_option(value=commercial.public_id)
    page.get_by_label("Template", exact=True).select_option(value="causal_lm")
    page.get_by_label("Base model", exact=True).select_option(value=tiny.public_id)
    shot("mix-form")

    # No weight for the second license, and its terms do not permit research: both on its row.
    console_messages.allow(r"status of 422 \(Unprocessable Entity\)")
    page.get_by_role("button", name="Submit job").click()
    second_row = page.locator("#id_grant_2_error")
    second_row.wait_for()
    assert "does not permit non-commercial research; it permits: commercial products and services." in (
        second_row.inner_text()
    )
    assert "a mix reads each license in proportion" in page.locator("#id_weight_2_error").inner_text()
    assert page.locator("#id_grant_error").count() == 0 and page.locator("#id_weight_error").count() == 0
    shot("mix-errors")
    assert not TrainingJob.objects.exists()

    page.get_by_label("Mix with a second license").select_option(value=south.public_id)
    page.get_by_label("Weight of the second license").fill("3")
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url(re.compile(r".*/training/jobs/job_[0-9a-f]{16}/$"))
    job = TrainingJob.objects.get(organisation=org)
    assert page.url.endswith(f"/training/jobs/{job.public_id}/")
    assert list(JobGrant.objects.filter(job=job).order_by("position").values_list("grant", "weight_bps")) == [
        (north.pk, 7000),
        (south.pk, 3000),
    ]
    shot("mix-queued")
