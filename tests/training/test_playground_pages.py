"""The portal playground's pages (issue 16 item 2) without a serving run: the licensed models and
their numbers, the service's errors on the form, a good prompt queued as a call whose page polls,
and who may see and call what. The browser test (tests/browser/test_playground.py) runs a call
end to end."""

from __future__ import annotations

import pytest
from django.test import Client

from common.models import User, WorkItem
from custody.models import Grant, UsageKind
from custody.services import usage_record
from tests.factories import MembershipFactory, UserFactory
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from tests.marketplace.orders.conftest import fund  # noqa: F401
from tests.training.test_models_api import dan, dyna, licensed, model  # noqa: F401
from training.models import InferenceCall

pytestmark = pytest.mark.django_db

URL = "/training/playground/"


@pytest.fixture
def dan_client(dan) -> Client:  # noqa: F811
    client = Client()
    client.force_login(dan)
    return client


def body(model_ref: str, prompt: str, new: int | str = 8, nonce: str = "n-0001") -> dict[str, object]:
    return {"model": model_ref, "prompt": prompt, "max_new_tokens": new, "nonce": nonce}


def test_the_playground_lists_the_licensed_model_with_its_numbers(licensed, dan_client):  # noqa: F811
    html = dan_client.get(URL).content.decode()
    ref = licensed["model"].job_ref
    assert f'data-model="{ref}"' in html
    assert licensed["license"]["license"] in html
    assert "<td data-per-call>64</td>" in html
    assert "<td data-metered>0</td>" in html
    assert "<td data-remaining>1000000</td>" in html


def test_a_good_prompt_is_queued_and_its_page_polls(licensed, dan_client):  # noqa: F811
    ref = licensed["model"].job_ref
    response = dan_client.post(URL, body(ref, "hello there"))
    call = InferenceCall.objects.get()
    assert (
        response.status_code == 302
        and response["Location"] == f"/training/playground/calls/{call.public_id}/"
    )
    assert WorkItem.objects.filter(kind="training.inference", ref=str(call.pk)).exists()
    page = dan_client.get(response["Location"]).content.decode()
    assert 'data-call-state="queued"' in page and "hx-trigger" in page
    assert "when answered" in page
    # The same page posted again (same nonce) is the same call; that page with another prompt is not.
    dan_client.post(URL, body(ref, "hello there"))
    assert InferenceCall.objects.count() == 1
    dan_client.post(URL, body(ref, "hello again"))
    assert InferenceCall.objects.count() == 2
    status = dan_client.get(f"/training/playground/calls/{call.public_id}/status/")
    assert status.status_code == 200 and "data-call-live" in status.content.decode()


@pytest.mark.parametrize(
    ("prompt", "new", "field", "message"),
    [
        ("", 8, "prompt", "An empty prompt."),
        ("ab\x01cd", 8, "prompt", "Text only: no control characters or undecodable bytes."),
        ("hello", 65, "max_new_tokens", "An integer 1..64 (the terms&#x27; limit)."),
        ("word " * 60, 10, "prompt", "At most 64 tokens with max_new_tokens."),
    ],
)
def test_the_service_messages_land_on_the_fields(licensed, dan_client, prompt, new, field, message):  # noqa: F811
    response = dan_client.post(URL, body(licensed["model"].job_ref, prompt, new))
    html = response.content.decode()
    assert response.status_code == 200
    error = html.split(f'id="id_{field}_error"', 1)
    assert len(error) == 2 and message in error[1][:400], html
    assert not InferenceCall.objects.exists()


def test_a_reached_cap_is_said_above_the_form(licensed, dan_client):  # noqa: F811
    grant = Grant.objects.get(external_ref=licensed["license"]["license"])
    usage_record(grant=grant, consumer_ref="inf_used", kind=UsageKind.TOKENS_INFERRED, quantity=999_990)
    html = dan_client.post(URL, body(licensed["model"].job_ref, "hello", 32)).content.decode()
    assert "inference tokens would be exceeded by this call" in html
    assert "<td data-remaining>10</td>" in html
    assert not InferenceCall.objects.exists()


def test_a_viewer_sees_but_cannot_call(licensed, dyna):  # noqa: F811
    MembershipFactory(user=UserFactory(username="vic"), organisation=dyna, role="viewer")
    client = Client()
    client.force_login(User.objects.get(username="vic"))
    assert "Viewers cannot call models." in client.get(URL).content.decode()
    assert client.post(URL, body(licensed["model"].job_ref, "hello")).status_code == 403
    assert not InferenceCall.objects.exists()


def test_another_organisation_sees_no_model_and_not_the_call(licensed, dan_client, bob):  # noqa: F811
    dan_client.post(URL, body(licensed["model"].job_ref, "hello there"))
    call = InferenceCall.objects.get()
    other = Client()
    other.force_login(bob)
    html = other.get(URL).content.decode()
    assert "holds no model license yet" in html and licensed["model"].job_ref not in html
    assert other.get(f"/training/playground/calls/{call.public_id}/").status_code == 404
    assert other.post(URL, body(licensed["model"].job_ref, "hello", nonce="n-0002")).status_code == 200
    assert InferenceCall.objects.count() == 1
