"""The live job page and the job form (issue 18, items 4 and 5).

The page's header, stage, progress, chart and history come from one endpoint and one reading of
the job, so they agree in every state; the gate is a stage of its own, never a bar at 100 %; the
loss chart draws every logged point on axes from 0 and says why it holds what it holds. The form
offers the license's purposes and the bases the template can train, refuses the others on their
fields, and starts from settings that learn on a CPU.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from custody.models import DatasetVersion, Grant
from tests.grants import grant_for_test
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from training.charts import loss_chart, nice_step
from training.job_templates import QUICK_START
from training.models import BaseModel, JobEvent, JobState, TrainingJob

TERMS: dict[str, Any] = {
    "purposes": ["research"],
    "job_templates": ["causal_lm", "causal_lm_lora", "seq_classification"],
    "max_jobs": 5,
    "max_tokens": 1_000_000,
    "max_epochs": 3,
    "weights_may_leave": True,
    "gate_max_exposure": 20.0,
}


@pytest.fixture
def version(sealed_rows) -> DatasetVersion:  # noqa: F811
    return sealed_rows()


@pytest.fixture
def grant(version, bolt) -> Grant:
    return grant_for_test(version, bolt, **TERMS)


@pytest.fixture
def bob_client(bob) -> Client:
    client = Client()
    client.force_login(bob)
    return client


@pytest.fixture
def tiny() -> BaseModel:
    return BaseModel.objects.get(name="gpt2-tiny", owner=None)


@pytest.fixture
def make_job(bolt, bob, grant, tiny):
    def _make(**fields: Any) -> TrainingJob:
        values: dict[str, Any] = {
            "organisation": bolt,
            "submitted_by": bob,
            "grant": grant,
            "template": "causal_lm",
            "base": tiny,
            "purpose": "research",
        }
        values.update(fields)
        job = TrainingJob.objects.create(**values)
        JobEvent.objects.create(job=job, kind="queued", detail="Queued.")
        return job

    return _make


def live(client: Client, job: TrainingJob) -> str:
    response = client.get(f"/training/jobs/{job.public_id}/status/", HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    return response.content.decode()


def header_state(html: str) -> str:
    match = re.search(r'data-job-header>.*?data-state="([a-z]+)"', html, re.S)
    assert match, "no state in the header"
    return match.group(1)


def stage_of(html: str) -> str:
    match = re.search(r'data-job-live data-job-state="([a-z]+)" data-stage="([a-z]+)"', html)
    assert match
    return match.group(2)


def current_items(html: str) -> list[str]:
    return re.findall(r'data-stage-item="([a-z]+)" data-status="(?:current|failed)"', html)


class TestOneRefreshForTheWholePage:
    def test_the_live_region_holds_header_stage_progress_chart_and_history(self, bob_client, make_job):
        job = make_job(state=JobState.RUNNING, training_started_at=timezone.now(), step=5, total_steps=10)
        JobEvent.objects.create(job=job, kind="training", detail="Training began.")
        html = live(bob_client, job)
        assert header_state(html) == "running"
        assert stage_of(html) == "training" and current_items(html) == ["training"]
        assert 'data-percent="50"' in html and "step 5 of 10 (50%)" in html
        assert 'data-event="training"' in html  # the history is inside the swapped region
        assert 'hx-trigger="every 2s"' in html and 'hx-swap="outerHTML"' in html
        page = bob_client.get(f"/training/jobs/{job.public_id}/").content.decode()
        # The page renders the same region: nothing outside it says a state.
        assert page.count('data-state="') == 1 and "data-job-live" in page

    @pytest.mark.parametrize(
        ("fields", "state", "stage"),
        [
            ({"state": JobState.QUEUED}, "queued", "queued"),
            ({"state": JobState.RUNNING, "step": 0}, "running", "preparing"),
            (
                {"state": JobState.RUNNING, "training_started_at": True, "step": 3, "total_steps": 6},
                "running",
                "training",
            ),
            (
                {"state": JobState.RELEASING, "training_started_at": True, "step": 6, "total_steps": 6},
                "releasing",
                "gate",
            ),
        ],
    )
    def test_header_stage_and_progress_agree(self, bob_client, make_job, fields, state, stage):
        if fields.pop("training_started_at", None):
            fields["training_started_at"] = timezone.now()
        html = live(bob_client, make_job(**fields))
        assert header_state(html) == state
        assert stage_of(html) == stage and current_items(html) == [stage]
        percents = re.findall(r'data-percent="(\d*)"', html)
        if stage == "training":
            assert percents == ["50"]
        elif stage == "gate":
            assert percents == [""]  # an indeterminate bar: the gate's progress is not a step count
        else:
            assert percents == []

    def test_the_gate_is_a_stage_that_says_what_it_checks_and_how_long(self, bob_client, make_job):
        job = make_job(state=JobState.RELEASING, training_started_at=timezone.now(), step=10, total_steps=10)
        html = live(bob_client, job)
        assert "Release gate: memorization replay" in html and "canary exposure" in html
        assert "tens of seconds" in html
        assert 'value="100"' not in html and "100%" not in html

    def test_a_finished_job_stops_polling_and_shows_its_result(self, bob_client, make_job):
        job = make_job(
            state=JobState.SUCCEEDED,
            training_started_at=timezone.now(),
            step=10,
            total_steps=10,
            gate={"passed": True, "checks": {"exposure": "passed", "verbatim": "passed"}},
            artifact_size=1000,
            loss_curve=[[4, 9.5], [8, 6.0]],
        )
        html = live(bob_client, job)
        assert header_state(html) == "succeeded" and stage_of(html) == "released"
        assert "hx-trigger" not in html and "data-percent" not in html
        assert 'id="result-heading"' in html and "Download the model" in html
        assert re.findall(r'data-status="done"', html) and not current_items(html)

    def test_a_failed_job_marks_the_stage_it_stopped_at(self, bob_client, make_job):
        job = make_job(
            state=JobState.FAILED,
            training_started_at=timezone.now(),
            gate={"passed": False},
            failure_code="training.gate_failed",
            failure_reason="The release gate withheld the model.",
        )
        html = live(bob_client, job)
        assert header_state(html) == "failed" and stage_of(html) == "gate"
        assert current_items(html) == ["gate"] and "Failed at this stage" in html
        assert "hx-trigger" not in html


class TestLossChart:
    def test_every_logged_point_is_drawn_on_axes_from_zero(self, bob_client, make_job):
        curve = [[step, round(10 - step / 10, 2)] for step in range(4, 60, 4)]
        job = make_job(
            state=JobState.RUNNING,
            training_started_at=timezone.now(),
            step=56,
            total_steps=60,
            loss_curve=curve,
        )
        html = live(bob_client, job)
        assert html.count("data-loss-point") == len(curve)
        y_labels = re.findall(r'text-anchor="end" font-size="12" fill="currentColor">([^<]+)<', html)
        assert y_labels[0] == "0" and float(y_labels[-1]) >= 10
        assert ">Step</text>" in html and ">Loss (nats)</text>" in html
        assert "latest" not in html
        assert f"this job logged {len(curve)} windows" in html

    def test_a_tiny_change_looks_tiny(self):
        chart = loss_chart([[4, 10.2], [8, 10.0]], total_steps=26)
        (first, last) = chart.dots
        height = chart.plot_bottom - chart.plot_top
        # 0.2 nats of a 10-nat loss move the line by about 2 % of the plot, not all of it.
        assert abs(float(first.y) - float(last.y)) < 0.05 * height
        assert chart.y_ticks[0].label == "0"

    def test_a_short_job_shows_its_only_window_as_a_dot_and_says_why(self, bob_client, make_job):
        job = make_job(
            state=JobState.SUCCEEDED,
            training_started_at=timezone.now(),
            step=6,
            total_steps=6,
            loss_curve=[[4, 9.8]],
            gate={"passed": True, "checks": {}},
        )
        html = live(bob_client, job)
        assert html.count("data-loss-point") == 1 and "data-loss-curve" not in html
        assert "Loss is reported every ≥32 records" in html and "this job logged 1 window." in html

    def test_no_window_and_dp_each_say_why_the_chart_is_empty(self, bob_client, make_job):
        small = make_job(
            state=JobState.SUCCEEDED,
            training_started_at=timezone.now(),
            step=3,
            total_steps=3,
            gate={"passed": True, "checks": {}},
        )
        assert "did not fill one window, so it logged none" in live(bob_client, small)
        private = make_job(state=JobState.RUNNING, training_started_at=timezone.now(), dp_enabled=True)
        assert "Under differential privacy no training loss leaves the sandbox" in live(bob_client, private)

    def test_axis_steps_are_round(self):
        assert [nice_step(s) for s in (10.2, 26, 0.3, 1000)] == [2.5, 10, 0.1, 200]


def form_data(grant: Grant, base: BaseModel, **overrides: Any) -> dict[str, Any]:
    data = {
        "grant": grant.public_id,
        "purpose": "research",
        "template": "causal_lm",
        "base": base.public_id,
        "epochs": "1",
        "learning_rate": "0.001",
        "batch_size": "4",
        "max_seq_len": "64",
        "seed": "0",
    }
    data.update(overrides)
    return data


def options(html: str, name: str) -> list[str]:
    select = re.search(rf'<select name="{name}".*?</select>', html, re.S)
    assert select, name
    return re.findall(r"<option[^>]*>([^<]*)</option>", select.group(0))


class TestJobForm:
    def test_purposes_come_from_the_licenses_terms(self, bob_client, version, bolt):
        grant_for_test(version, bolt, **{**TERMS, "purposes": ["research", "internal_evaluation"]})
        html = bob_client.get("/training/jobs/new/").content.decode()
        assert options(html, "purpose") == ["Non-commercial research", "Internal evaluation only"]
        assert '<input type="text" name="purpose"' not in html

    def test_a_purpose_the_chosen_license_does_not_permit_is_refused_on_its_field(
        self, bob_client, grant, version, bolt, tiny
    ):
        grant_for_test(version, bolt, **{**TERMS, "purposes": ["commercial"]})
        response = bob_client.post("/training/jobs/new/", form_data(grant, tiny, purpose="commercial"))
        assert response.status_code == 200
        html = response.content.decode()
        assert (
            "does not permit commercial products and services; it permits: non-commercial research." in html
        )
        assert not TrainingJob.objects.exists()

    def test_bases_are_grouped_by_task_and_a_wrong_base_is_refused(self, bob_client, grant):
        html = bob_client.get("/training/jobs/new/").content.decode()
        assert '<optgroup label="Causal language models">' in html
        assert '<optgroup label="Classification encoders">' in html
        assert re.search(
            r'<option value="base_[0-9a-f]{16}" data-task="classification"[^>]*>minilm-l6<', html
        )
        minilm = BaseModel.objects.get(name="minilm-l6", owner=None)
        response = bob_client.post("/training/jobs/new/", form_data(grant, minilm))
        assert response.status_code == 200
        assert (
            "minilm-l6 is a classification encoder; the Causal language model (full fine-tune) template "
            "trains a causal language model." in response.content.decode()
        )
        assert not TrainingJob.objects.exists()

    def test_starts_from_gpt2_tiny_and_settings_that_learn_on_a_cpu(self, bob_client, grant, tiny):
        html = bob_client.get("/training/jobs/new/").content.decode()
        assert re.search(
            rf'<option value="{tiny.public_id}" selected data-task="causal_lm" '
            r'data-default="true">gpt2-tiny<',
            html,
        )
        quick = QUICK_START["causal_lm"]
        for name in ("epochs", "batch_size", "max_seq_len"):
            assert re.search(rf'name="{name}" value="{quick[name]}"', html), name
        assert 'name="learning_rate" value="0.001"' in html
        assert 'data-quick-start="{&quot;epochs&quot;: 1, &quot;learning_rate&quot;: 5e-05' in html

    def test_starts_on_a_template_the_license_permits(self, bob_client, version, bolt):
        grant_for_test(version, bolt, **{**TERMS, "job_templates": ["causal_lm_lora", "seq_classification"]})
        html = bob_client.get("/training/jobs/new/").content.decode()
        assert re.search(r'<option value="causal_lm_lora" selected', html)
        assert "data-license-templates=" in html

    @pytest.mark.parametrize("value", ["３", "1_0", "1.0", "2e1"])
    def test_whole_numbers_are_ascii_digits_only(self, bob_client, grant, tiny, value):
        response = bob_client.post("/training/jobs/new/", form_data(grant, tiny, batch_size=value))
        assert response.status_code == 200 and "Enter a whole number." in response.content.decode()
        assert not TrainingJob.objects.exists()

    def test_a_valid_form_queues_the_job_with_the_chosen_purpose(self, bob_client, grant, tiny):
        response = bob_client.post("/training/jobs/new/", form_data(grant, tiny))
        job = TrainingJob.objects.get()
        assert response.status_code == 302 and response["Location"] == f"/training/jobs/{job.public_id}/"
        assert job.purpose == "research" and job.request["hyperparameters"]["batch_size"] == 4
