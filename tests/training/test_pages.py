"""The portal's training pages: submit from the form, the job page with its loss curve, cancel, oversight."""

from __future__ import annotations

import pytest
from django.test import Client

from tests.helpers import login_with_otp
from training.models import BaseModel, JobState, TrainingJob


@pytest.fixture
def bob_client(bob) -> Client:
    client = Client()
    client.force_login(bob)
    return client


def form_data(grant, base: BaseModel, **overrides) -> dict:
    data = {
        "grant": grant.public_id,
        "purpose": "research",
        "template": "causal_lm",
        "base": base.public_id,
        "epochs": 1,
        "learning_rate": 0.001,
        "batch_size": 4,
        "max_seq_len": 32,
        "seed": 1,
    }
    data.update(overrides)
    return data


class TestSubmitForm:
    def test_submits_a_job_and_shows_it(self, bob_client, grant, tiny):
        page = bob_client.get("/training/jobs/new/")
        assert page.status_code == 200
        assert f"{grant.external_ref}: " in page.content.decode()
        response = bob_client.post("/training/jobs/new/", form_data(grant, tiny))
        job = TrainingJob.objects.get()
        assert response.status_code == 302 and response["Location"] == f"/training/jobs/{job.public_id}/"
        assert job.state == JobState.QUEUED
        listing = bob_client.get("/training/jobs/").content.decode()
        assert f"Job {job.public_id}" in listing

    def test_a_license_rule_is_shown_on_its_field(self, bob_client, grant, tiny):
        response = bob_client.post("/training/jobs/new/", form_data(grant, tiny, epochs=9))
        assert response.status_code == 200
        assert "allows at most 3 epochs" in response.content.decode()
        assert not TrainingJob.objects.exists()

    def test_a_provider_member_cannot_open_the_form(self, acme_member):
        client = Client()
        client.force_login(acme_member)
        assert client.get("/training/jobs/new/").status_code == 403


class TestJobPage:
    def test_shows_progress_the_loss_curve_and_metrics(self, bob_client, submit, grant):
        job = submit(grant)
        TrainingJob.objects.filter(pk=job.pk).update(
            state=JobState.RUNNING,
            step=5,
            total_steps=10,
            loss=2.5,
            loss_curve=[[1, 4.0], [3, 3.1], [5, 2.5]],
            metrics={"validation": [{"epoch": 1, "loss": 2.7, "perplexity": 14.9}]},
        )
        page = bob_client.get(f"/training/jobs/{job.public_id}/").content.decode()
        assert "data-loss-curve" in page and "<polyline" in page
        assert "14.90" in page and "50%" in page
        assert 'hx-trigger="every 2s"' in page
        status = bob_client.get(f"/training/jobs/{job.public_id}/status/", HTTP_HX_REQUEST="true")
        assert status.status_code == 200 and "data-loss-curve" in status.content.decode()

    def test_the_status_poll_brings_the_end_and_stops(self, bob_client, submit, grant):
        job = submit(grant)
        TrainingJob.objects.filter(pk=job.pk).update(state=JobState.FAILED, failure_reason="boom")
        response = bob_client.get(f"/training/jobs/{job.public_id}/status/", HTTP_HX_REQUEST="true")
        html = response.content.decode()
        assert response.status_code == 200 and 'data-state="failed"' in html and "boom" in html
        assert "hx-trigger" not in html

    def test_cancel_from_the_page(self, bob_client, submit, grant):
        job = submit(grant)
        response = bob_client.post(f"/training/jobs/{job.public_id}/cancel/")
        assert response.status_code == 302
        assert TrainingJob.objects.get(pk=job.pk).state == JobState.CANCELLED

    def test_another_organisations_job_is_not_found(self, submit, grant, alice):
        job = submit(grant)
        client = Client()
        client.force_login(alice)
        assert client.get(f"/training/jobs/{job.public_id}/").status_code == 404


class TestOversight:
    def test_an_operator_sees_and_cancels_any_job(self, ops, submit, grant):
        job = submit(grant)
        client = Client()
        login_with_otp(client, ops)
        assert f"Job {job.public_id}" in client.get("/training/ops/jobs/").content.decode()
        assert client.post(f"/training/ops/jobs/{job.public_id}/cancel/").status_code == 302
        assert TrainingJob.objects.get(pk=job.pk).state == JobState.CANCELLED

    def test_an_auditor_reads_but_cannot_cancel(self, audrey, submit, grant):
        job = submit(grant)
        client = Client()
        client.force_login(audrey)
        assert client.get("/training/ops/jobs/").status_code == 200
        assert client.post(f"/training/ops/jobs/{job.public_id}/cancel/").status_code == 403
        assert TrainingJob.objects.get(pk=job.pk).state == JobState.QUEUED
