"""The provider's valuation page: the version page links to it, an admin of the owner queues a
valuation from it, others cannot, and bad settings come back beside their fields."""

from __future__ import annotations

import pytest
from django.test import Client

from training.models import JobState, TrainingJob


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def page(sealed_version) -> str:
    return f"/training/valuations/{sealed_version.public_id}/"


def test_the_version_page_links_to_it(sealed_version, alice, page) -> None:
    html = _client(alice).get(f"/data/versions/{sealed_version.public_id}/").content.decode()
    assert "data-value-version" in html and page in html


def test_an_admin_of_the_owner_queues_a_valuation(sealed_version, alice, acme, page) -> None:
    client = _client(alice)
    assert "data-valuation-form" in client.get(page).content.decode()
    response = client.post(page, {"label_field": "kind", "k": 3, "min_group": 10})
    job = TrainingJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/training/jobs/{job.public_id}/"
    assert job.state == JobState.QUEUED and job.organisation == acme and job.template == "valuation"
    assert job.spec["valuation"] == {"k": 3, "min_group": 10}
    # The page lists it.
    assert job.public_id in client.get(page).content.decode()


def test_bad_settings_come_back_beside_their_fields(alice, page) -> None:
    response = _client(alice).post(page, {"label_field": "kind", "k": 0, "min_group": 10})
    assert response.status_code == 200 and "data-valuation-form" in response.content.decode()
    assert response.context["form"].errors["k"]
    assert not TrainingJob.objects.exists()


def test_members_see_it_but_do_not_value_and_others_do_not_see_it(acme_member, bob, page) -> None:
    member = _client(acme_member)
    assert "data-valuation-form" not in member.get(page).content.decode()
    assert member.post(page, {"label_field": "kind", "k": 3, "min_group": 10}).status_code == 403
    assert _client(bob).get(page).status_code == 404
    assert not TrainingJob.objects.exists()
