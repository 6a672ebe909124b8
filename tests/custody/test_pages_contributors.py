"""Contributor invitations in the portal: an owner's admin invites another provider to a version."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import cast

import pytest
from django.test import Client
from django.urls import reverse

from common.models import AuditEvent, Notification, Organisation, User
from custody import services
from custody.models import Contribution, DatasetVersion, VersionContributor
from tests.custody.conftest import jsonl
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory

pytestmark = pytest.mark.django_db


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def invite_url(version: DatasetVersion) -> str:
    return reverse("custody:contributor_invite", kwargs={"version_id": version.public_id})


def version_url(version: DatasetVersion) -> str:
    return reverse("custody:version", kwargs={"version_id": version.public_id})


class Elements(HTMLParser):
    """Every start tag's attributes, by id (enough to check what a field is tied to)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.by_id: dict[str, dict[str, str | None]] = {}
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if found.get("id"):
            self.by_id[str(found["id"])] = {"tag": tag, **found}


@pytest.fixture
def cora(db) -> Organisation:
    return cast(Organisation, OrganisationFactory(name="Cora Texts", slug="cora-texts", is_provider=True))


@pytest.fixture
def cora_admin(cora) -> User:
    user = cast(User, UserFactory(username="cora-admin"))
    MembershipFactory(user=user, organisation=cora, role="admin")
    return user


def invited(version: DatasetVersion) -> set[str]:
    return set(
        VersionContributor.objects.filter(version=version).values_list("organisation__name", flat=True)
    )


class TestInvite:
    def test_an_admin_invites_another_provider_by_its_name(self, alice, acme, cora, version):
        response = client_for(alice).post(invite_url(version), {"organisation": "  cora TEXTS "})
        assert response.status_code == 302
        assert response["Location"] == version_url(version)
        assert invited(version) == {"Acme Corpora", "Cora Texts"}
        event = AuditEvent.objects.get(action="custody.contributor_invite")
        assert (event.actor_name, event.organisation_id, event.object_id) == (
            "alice",
            acme.pk,
            str(version.pk),
        )
        assert event.details == {"contributor": cora.pk, "contributor_name": "Cora Texts"}
        note = Notification.objects.get(organisation=cora, kind="dataset.contribution_invited")
        assert note.subject == f"Acme Corpora invited you to contribute to {version.dataset.name}"
        assert note.payload["version"] == version.public_id
        assert not Notification.objects.filter(
            organisation=acme, kind="dataset.contribution_invited"
        ).exists()

    def test_the_short_name_works_too(self, alice, cora, version):
        client_for(alice).post(invite_url(version), {"organisation": "cora-texts"})
        assert "Cora Texts" in invited(version)

    def test_the_page_then_says_so_and_lists_the_new_contributor(self, alice, cora, version):
        response = client_for(alice).post(invite_url(version), {"organisation": "Cora Texts"}, follow=True)
        page = response.content.decode()
        assert "Cora Texts may now upload to version 1." in page
        row = re.search(rf'<tr data-contributor="{cora.public_id}">(.*?)</tr>', page, re.S)
        assert row is not None
        assert "by alice" in row.group(1)
        assert "<td data-files>0</td>" in row.group(1)

    def test_an_unknown_organisation_is_explained_beside_the_field_and_the_input_kept(self, alice, version):
        response = client_for(alice).post(invite_url(version), {"organisation": "Nobody Ltd"})
        assert response.status_code == 422
        page = response.content.decode()
        assert re.search(r'id="id_organisation_error"><li>No organisation is called “Nobody Ltd”', page)
        field = Elements(page).by_id["id_organisation"]
        assert field["value"] == "Nobody Ltd"
        assert field["aria-invalid"] == "true"
        assert field["aria-describedby"] == "id_organisation_helptext id_organisation_error"
        assert invited(version) == {"Acme Corpora"}
        assert not AuditEvent.objects.filter(action="custody.contributor_invite").exists()

    def test_an_empty_name_is_a_field_error(self, alice, version):
        response = client_for(alice).post(invite_url(version), {})
        assert response.status_code == 422
        assert 'id="id_organisation_error"' in response.content.decode()

    def test_a_trainer_organisation_cannot_contribute(self, alice, bolt, version):
        response = client_for(alice).post(invite_url(version), {"organisation": "Bolt Models"})
        assert response.status_code == 422
        assert re.search(
            r'id="id_organisation_error"><li>Bolt Models is not a data provider', response.content.decode()
        )
        assert invited(version) == {"Acme Corpora"}

    def test_the_owner_itself_is_explained(self, alice, version):
        response = client_for(alice).post(invite_url(version), {"organisation": "Acme Corpora"})
        assert response.status_code == 422
        assert "Acme Corpora owns this dataset" in response.content.decode()

    def test_inviting_twice_says_so_and_is_audited_once(self, alice, cora, version):
        client = client_for(alice)
        client.post(invite_url(version), {"organisation": "Cora Texts"})
        page = client.post(invite_url(version), {"organisation": "Cora Texts"}, follow=True).content.decode()
        assert "Cora Texts may already contribute to this version." in page
        assert AuditEvent.objects.filter(action="custody.contributor_invite").count() == 1

    def test_a_closed_version_takes_no_contributors(self, alice, cora, version):
        services.version_reject(actor=alice, version=version, reason="")
        client = client_for(alice)
        response = client.post(invite_url(version), {"organisation": "Cora Texts"}, follow=True)
        page = response.content.decode()
        assert "Contributors can only join a version that is still open." in page
        assert "Invite to contribute" not in page
        assert invited(version) == {"Acme Corpora"}


class TestWhoMayInvite:
    def test_another_organisations_version_is_not_found(self, cora_admin, version):
        assert (
            client_for(cora_admin).post(invite_url(version), {"organisation": "Cora Texts"}).status_code
            == 404
        )
        assert client_for(cora_admin).get(version_url(version)).status_code == 404

    def test_an_invited_contributor_cannot_invite_others(self, alice, cora, cora_admin, version):
        services.contributor_invite(actor=alice, version=version, organisation=cora)
        OrganisationFactory(name="Dora Data", is_provider=True)
        client = client_for(cora_admin)
        assert client.post(invite_url(version), {"organisation": "Dora Data"}).status_code == 404
        assert "Invite to contribute" not in client.get(version_url(version)).content.decode()

    @pytest.mark.parametrize("who", ["acme_member", "acme_viewer"])
    def test_members_and_viewers_are_refused_and_see_no_form(self, request, who, cora, version):
        user = request.getfixturevalue(who)
        client = client_for(user)
        assert client.post(invite_url(version), {"organisation": "Cora Texts"}).status_code == 403
        page = client.get(version_url(version)).content.decode()
        assert "Invite to contribute" not in page
        assert "Admins of Acme Corpora may invite other provider organisations" in page
        assert invited(version) == {"Acme Corpora"}

    def test_only_post_is_allowed(self, alice, version):
        assert client_for(alice).get(invite_url(version)).status_code == 405


class TestContributorsOfAVersion:
    def test_the_owner_sees_who_contributed_what(self, alice, cora, cora_admin, version, upload):
        upload(version, jsonl([{"text": "one"}, {"text": "two"}]), filename="acme.jsonl")
        services.contributor_invite(actor=alice, version=version, organisation=cora)
        # Cora uploads through the same API the page's upload widget uses, acting as Cora.
        contributor = client_for(cora_admin)
        started = contributor.post(
            reverse("api-contributions", kwargs={"version_id": version.public_id}),
            {"filename": "cora.jsonl"},
            content_type="application/json",
        )
        assert started.status_code == 201, started.content
        contribution_id = started.json()["id"]
        data = jsonl([{"text": "three"}])
        part = contributor.put(
            reverse("api-contribution-part", kwargs={"contribution_id": contribution_id, "number": 1}),
            data,
            content_type="application/octet-stream",
        )
        assert part.status_code == 200, part.content
        done = contributor.post(
            reverse("api-contribution-complete", kwargs={"contribution_id": contribution_id})
        )
        assert done.status_code == 202, done.content
        contributor.post(
            reverse("api-contributions", kwargs={"version_id": version.public_id}),
            {"filename": "cora-more.jsonl"},
            content_type="application/json",
        )
        assert Contribution.objects.get(public_id=contribution_id).contributor == cora

        page = client_for(alice).get(version_url(version)).content.decode()
        rows = dict(re.findall(r'<tr data-contributor="(org_[0-9a-f]{16})">(.*?)</tr>', page, re.S))
        owner = version.dataset.owner.public_id
        assert list(rows) == [owner, cora.public_id]  # the owner first
        assert "<td data-files>1</td>" in rows[owner]
        assert "<td data-files>2 (1 unfinished)</td>" in rows[cora.public_id]
        assert f"<td>{len(data)}\xa0bytes</td>" in rows[cora.public_id]
        # The uploads table names each file's contributor too.
        assert re.search(r"<th scope=\"row\">cora\.jsonl</th>\s*<td>Cora Texts</td>", page)

    def test_a_contributor_sees_the_upload_widget_but_not_the_list(self, alice, cora, cora_admin, version):
        services.contributor_invite(actor=alice, version=version, organisation=cora)
        page = client_for(cora_admin).get(version_url(version)).content.decode()
        assert "data-upload" in page
        assert 'id="contributors"' not in page
        assert "you contribute for Cora Texts" in page


def test_the_version_page_costs_the_same_queries_for_one_or_eight_contributors(
    alice, version, django_assert_max_num_queries
) -> None:
    client = client_for(alice)
    with django_assert_max_num_queries(60) as few:
        assert client.get(version_url(version)).status_code == 200
    for n in range(7):
        other = cast(Organisation, OrganisationFactory(name=f"Provider {n}", is_provider=True))
        services.contributor_invite(actor=alice, version=version, organisation=other)
    with django_assert_max_num_queries(len(few.captured_queries)):
        page = client.get(version_url(version)).content.decode()
    assert page.count("<tr data-contributor=") == 8
