"""The portal's generation form (issue 17 item 1; training/generate_pages.py), through the Django
test client: it offers the organisation's own models that may generate and nothing else, a valid
submit queues the same job as the API's and lands on the job page, and each invalid input is
answered on its field (the service's problem pointers mapped to the form's fields)."""

from __future__ import annotations

import html
import re
from typing import Any, cast

import pytest
from django.test import Client

from common.models import Organisation, User
from custody.models import DatasetVersion, Grant
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.grants import grant_for_test
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from training.models import BaseModel, JobState, JobTemplate, TrainingJob

pytestmark = pytest.mark.django_db

URL = "/training/jobs/generate/"
TERMS: dict[str, Any] = {
    "purposes": ["research"],
    "job_templates": ["causal_lm", "generate"],
    "max_jobs": 5,
    "max_tokens": 1_000_000,
    "max_epochs": 3,
    "weights_may_leave": False,
    "gate_max_exposure": 20.0,
}


def held_model(organisation: Organisation, grant: Grant, base: BaseModel, **fields: Any) -> TrainingJob:
    """A succeeded job whose weights stay in custody (the row only: nothing here decrypts them)."""
    values: dict[str, Any] = {
        "organisation": organisation,
        "grant": grant,
        "template": "causal_lm",
        "base": base,
        "state": JobState.SUCCEEDED,
        "artifact_encrypted": True,
        "artifact_blob_key": f"custody/artifacts/{organisation.pk}-{grant.pk}",
    }
    values.update(fields)
    return TrainingJob.objects.create(**values)


@pytest.fixture
def source(acme, sealed_rows) -> DatasetVersion:  # noqa: F811
    return sealed_rows(tokens={acme: 3_000})


@pytest.fixture
def governing(source, bolt) -> Grant:
    return grant_for_test(source, bolt, **TERMS)


@pytest.fixture
def tiny() -> BaseModel:
    return BaseModel.objects.get(name="gpt2-tiny", owner=None)


@pytest.fixture
def model(bolt, bob, governing, tiny) -> TrainingJob:
    return held_model(bolt, governing, tiny, submitted_by=bob)


@pytest.fixture
def cato_model(source, tiny) -> TrainingJob:
    """Another trainer's model, under its own license that names generate."""
    cato = cast(Organisation, OrganisationFactory(name="Cato Models", is_provider=False, is_trainer=True))
    return held_model(cato, grant_for_test(source, cato, **TERMS), tiny)


@pytest.fixture
def bob_client(bob) -> Client:
    client = Client()
    client.force_login(bob)
    return client


def offered(page: str) -> list[str]:
    select = re.search(r'<select name="custody_model".*?</select>', page, re.DOTALL)
    assert select is not None
    return re.findall(r'<option value="([^"]+)"', select.group(0))


def field_error(page: str, field: str) -> str:
    found = re.search(rf'<ul class="field__errors" id="id_{field}_error">(.*?)</ul>', page, re.DOTALL)
    return html.unescape(re.sub(r"<[^>]+>", "", found.group(1))) if found else ""


def form(model: TrainingJob, **overrides: Any) -> dict[str, Any]:
    data = {
        "custody_model": model.public_id,
        "prompts": "Ticket about a late refund\r\n\r\nSummary of the outage\r\n",
        "records": "40",
        "max_new_tokens": "32",
        "temperature": "0.8",
    }
    data.update(overrides)
    return data


class TestTheForm:
    def test_offers_only_the_organisations_models_that_may_generate(
        self, bob_client, bolt, source, tiny, model, cato_model
    ):
        no_generate = held_model(
            bolt, grant_for_test(source, bolt, **{**TERMS, "job_templates": ["causal_lm"]}), tiny
        )
        minilm = BaseModel.objects.get(name="minilm-l6", owner=None)
        classifier = held_model(bolt, model.grant, minilm, template="seq_classification")
        downloadable = held_model(bolt, model.grant, tiny, artifact_encrypted=False)
        running = held_model(bolt, model.grant, tiny, state=JobState.RUNNING)
        response = bob_client.get(URL)
        assert response.status_code == 200
        page = response.content.decode()
        assert offered(page) == [model.public_id]
        for other in (cato_model, no_generate, classifier, downloadable, running):
            assert other.public_id not in page
        # Every label and limit the page states (the limits are the API's: training/runner/generate.py).
        for text in (
            "Model held in custody",
            "One prompt per line (256 at most, each up to 1,000 characters)",
            "Number of records",
            "How many records to generate, 1 to 10,000, spread evenly over the prompts.",
            "Maximum new tokens per record",
            "1 to 256: how far the model continues each prompt.",
            "Above 0 and at most 5",
        ):
            assert text in html.unescape(page), text
        assert 'name="max_new_tokens" value="48"' in page and 'name="temperature" value="1.0"' in page

    def test_the_model_link_preselects_the_model(self, bob_client, model):
        page = bob_client.get(f"{URL}?model={model.public_id}").content.decode()
        assert re.search(rf'<option value="{model.public_id}" selected>', page)

    def test_an_organisation_without_a_model_is_told_how_to_get_one(self, bob_client):
        page = bob_client.get(URL).content.decode()
        assert offered(page) == [] and "data-no-models" in page

    def test_a_provider_and_a_viewer_are_refused(self, alice, bolt, model):
        provider = Client()
        provider.force_login(alice)
        assert provider.get(URL).status_code == 403
        viewer = cast(User, UserFactory(username="val"))
        MembershipFactory(user=viewer, organisation=bolt, role="viewer")
        client = Client()
        client.force_login(viewer)
        assert client.get(URL).status_code == 403
        assert client.post(URL, form(model)).status_code == 403
        assert not TrainingJob.objects.filter(template=JobTemplate.GENERATE).exists()


class TestSubmit:
    def test_a_valid_submit_queues_the_generation_job_and_goes_to_its_page(self, bob_client, bob, model):
        response = bob_client.post(URL, form(model))
        job = TrainingJob.objects.get(template=JobTemplate.GENERATE)
        assert response.status_code == 302
        assert response["Location"] == f"/training/jobs/{job.public_id}/"
        assert job.state == JobState.QUEUED and job.custody_model_id == model.pk
        assert job.submitted_by == bob and job.grant_id == model.grant_id
        assert job.request["generation"] == {
            "prompts": ["Ticket about a late refund", "Summary of the outage"],
            "records": 40,
            "max_new_tokens": 32,
            "temperature": 0.8,
        }
        page = bob_client.get(response["Location"]).content.decode()
        assert f"Generation job {job.public_id} is queued." in page

    @pytest.mark.parametrize(
        ("overrides", "field", "error"),
        [
            ({"prompts": ""}, "prompts", "This field is required."),
            (
                {"prompts": "\n".join(f"p{i}" for i in range(257))},
                "prompts",
                "Must be a list of 1 to 256 prompts.",
            ),
            (
                {"prompts": "first\n\n" + "x" * 1001},
                "prompts",
                "The prompt on line 3: must be a string of at most 1,000 characters.",
            ),
            ({"records": "0"}, "records", "Must be an integer from 1 to 10,000."),
            ({"records": "10001"}, "records", "Must be an integer from 1 to 10,000."),
            ({"records": "3.5"}, "records", "Enter a whole number."),
            ({"records": ""}, "records", "This field is required."),
            ({"max_new_tokens": "257"}, "max_new_tokens", "Must be an integer from 1 to 256."),
            ({"temperature": "0"}, "temperature", "Must be a number above 0 and at most 5."),
            ({"temperature": "5.5"}, "temperature", "Must be a number above 0 and at most 5."),
            ({"temperature": "warm"}, "temperature", "Enter a number."),
            ({"custody_model": "job_0000000000000000"}, "custody_model", "Select a valid choice."),
        ],
    )
    def test_each_invalid_input_is_answered_on_its_field(self, bob_client, model, overrides, field, error):
        response = bob_client.post(URL, form(model, **overrides))
        assert response.status_code == 422
        page = response.content.decode()
        assert field_error(page, field).startswith(error), field_error(page, field)
        others = {"custody_model", "prompts", "records", "max_new_tokens", "temperature"} - {field}
        assert not [name for name in others if field_error(page, name)]
        assert not TrainingJob.objects.filter(template=JobTemplate.GENERATE).exists()

    def test_a_forged_post_of_another_organisations_model_is_refused(self, bob_client, model, cato_model):
        response = bob_client.post(URL, form(cato_model))
        assert response.status_code == 422
        assert field_error(response.content.decode(), "custody_model").startswith("Select a valid choice.")
        assert not TrainingJob.objects.filter(template=JobTemplate.GENERATE).exists()
        assert bob_client.post(URL, form(model)).status_code == 302  # control: its own model is taken

    def test_a_used_up_license_is_answered_above_the_form(self, bob_client, model):
        grant = model.grant
        grant.jobs_reserved = TERMS["max_jobs"]
        grant.save(update_fields=["jobs_reserved"])
        response = bob_client.post(URL, form(model))
        assert response.status_code == 422
        assert f"allows {TERMS['max_jobs']} jobs and all are used." in response.content.decode()
        assert not TrainingJob.objects.filter(template=JobTemplate.GENERATE).exists()


class TestLinks:
    def test_the_job_form_links_to_the_generation_form(self, bob_client, governing):
        page = bob_client.get("/training/jobs/new/").content.decode()
        assert f'href="{URL}"' in page and "data-generate-link" in page
        generate = re.search(r"<code>generate</code></dt>\s*<dd>(.*?)</dd>", page, re.DOTALL)
        assert generate is not None and generate.group(1).startswith(
            "Trains nothing: a causal language model"
        )

    def test_a_model_that_may_generate_links_to_the_form_with_itself_chosen(
        self, bob_client, model, bolt, tiny
    ):
        page = bob_client.get(f"/training/jobs/{model.public_id}/").content.decode()
        assert f'href="{URL}?model={model.public_id}"' in page
        # A model whose license does not name generate has no link.
        other = held_model(
            bolt, grant_for_test(model.grant.version, bolt, **{**TERMS, "job_templates": ["causal_lm"]}), tiny
        )
        assert (
            "data-generate-link" not in bob_client.get(f"/training/jobs/{other.public_id}/").content.decode()
        )


class TestTheGenerationJobPage:
    """A generation job's page speaks of generation: no steps, loss, release gate or trained tokens."""

    def test_a_queued_job_shows_what_was_asked(self, bob_client, model):
        location = bob_client.post(URL, form(model))["Location"]
        page = html.unescape(bob_client.get(location).content.decode())
        assert "Synthetic corpus generation" in page
        assert f"model {model.public_id}, gpt2-tiny on" in page
        assert "Records asked for</dt><dd>40 · at most 32 new tokens each · temperature 0.8" in page
        assert re.findall(r'data-stage-item="(\w+)"', page) == ["queued", "generating", "screen", "released"]
        for training_words in ("epoch", "Loss is reported", "Release gate", "Platform tokens trained"):
            assert training_words not in page, training_words

    def test_a_succeeded_job_shows_the_screen_and_the_new_version(self, bob_client, bob, bolt, model, source):
        job = held_model(
            bolt,
            model.grant,
            model.base,
            template=JobTemplate.GENERATE,
            custody_model=model,
            artifact_encrypted=False,
            artifact_blob_key="",
            spec={"generation": {"prompts": ["a"], "records": 30}},
            metrics={
                "generation": {
                    "generated": 30,
                    "kept": 26,
                    "dropped": 4,
                    "dropped_exact": 2,
                    "dropped_near": 1,
                    "dropped_canary": 1,
                    "synthetic_version": source.public_id,
                }
            },
        )
        page = html.unescape(bob_client.get(f"/training/jobs/{job.public_id}/").content.decode())
        assert "Records generated</dt><dd>30" in page and "Records kept</dt><dd>26" in page
        assert "4 (2 exact copies, 1 near copy, 1 with a canary secret)" in page
        assert f'href="/data/versions/{source.public_id}/"' in page
        assert f"Kept 26 of 30 generated records as synthetic version {source.public_id}; 4 dropped" in page
        assert "at most 48 new tokens each · temperature 1.0" in page  # the runner's defaults
        assert "Platform tokens trained" not in page and "Release gate" not in page


def test_an_empty_post_is_answered_on_every_required_field(bob_client, model):
    page = bob_client.post(URL, {}).content.decode()
    for name in ("custody_model", "prompts", "records", "max_new_tokens", "temperature"):
        assert field_error(page, name) == "This field is required.", name
