"""Smaller page fixes of issue 18: readable spend page, notifications that link to their order, the
next step after sealing, contributors' counts that follow an upload, duplicates after PII replacement,
and a favicon."""

from __future__ import annotations

import html
import re

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from common.models import Notification
from custody.models import Finding, VersionState
from marketplace.services.orders import order_place
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from tests.marketplace.orders.conftest import cora, fund, market  # noqa: F401

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def text_of(response) -> str:
    return html.unescape(response.content.decode())


@pytest.fixture
def ordered(market, fund, bolt, bob):  # noqa: F811
    fund(bolt, 100_000)
    return order_place(buyer=bolt, offer=market("fixed"), actor=bob)


class TestSpendPage:
    def test_dates_read_as_dates_and_states_as_words(self, bob, ordered):
        page = text_of(client_for(bob).get("/market/spend/"))
        row = re.search(r"<tbody>(.*?)</tbody>", page, re.S)
        assert row is not None
        cell = re.search(r'<time datetime="([^"]+)">([^<]+)</time>', row.group(1))
        assert cell is not None
        assert "T" in cell.group(1)  # the machine-readable attribute keeps ISO 8601
        assert re.fullmatch(r"\d{1,2} [A-Z][a-z]{2} \d{4}, \d{2}:\d{2}", cell.group(2)), cell.group(2)
        assert "Paid (license issued)" in row.group(1)
        head = re.search(r"<thead>(.*?)</thead>", page, re.S)
        assert head is not None and "placed_at" not in head.group(1).lower()


class TestNotificationLinks:
    def test_an_order_notification_leads_each_side_to_its_order(self, alice, bob, acme, bolt, ordered):
        for user, org, page in (
            (bob, bolt, "/market/orders/"),
            (alice, acme, "/market/orders/received/"),
        ):
            assert Notification.objects.filter(organisation=org, object_id=ordered.ref).exists()
            client = client_for(user)
            listing = text_of(client.get(f"/organisations/{org.public_id}/notifications/"))
            link = f'href="/market/orders/{ordered.ref}/"'
            assert link in listing, listing
            response = client.get(f"/market/orders/{ordered.ref}/")
            assert response.status_code == 302
            assert response["Location"] == f"{page}#order-{ordered.ref}"
            assert f'id="order-{ordered.ref}"' in text_of(client.get(page))

    def test_a_license_link_leads_the_licensee_to_its_license(self, bob, ordered):
        ref = ordered.license.ref
        response = client_for(bob).get(f"/market/licenses/{ref}/")
        assert response["Location"] == f"/market/orders/#license-{ref}"

    def test_another_organisation_gets_404(self, acme_member, ordered):
        from common.models import Membership
        from tests.factories import OrganisationFactory

        other = OrganisationFactory(name="Other Trainers", is_provider=False, is_trainer=True)
        Membership.objects.filter(user=acme_member).update(organisation=other)
        client = client_for(acme_member)
        assert client.get(f"/market/orders/{ordered.ref}/").status_code == 404
        assert client.get(f"/market/licenses/{ordered.license.ref}/").status_code == 404


class TestAfterSealing:
    def test_the_sealed_version_page_offers_to_create_a_listing(self, alice, sealed_rows):  # noqa: F811
        version = sealed_rows()
        client = client_for(alice)
        page = text_of(client.get(f"/data/versions/{version.public_id}/"))
        step = re.search(r"<div class=\"alert alert--info\" data-next-step>(.*?)</div>", page, re.S)
        assert step is not None
        href = f"/market/listings/?version={version.public_id}#list-version"
        assert f'href="{href}"' in step.group(1) and "Create a listing" in step.group(1)
        form = text_of(client.get(f"/market/listings/?version={version.public_id}"))
        assert re.search(rf'<option value="{version.pk}" selected>', form), form

    def test_viewers_are_not_offered_the_step(self, acme_viewer, sealed_rows):  # noqa: F811
        version = sealed_rows()
        response = client_for(acme_viewer).get(f"/data/versions/{version.public_id}/")
        assert response.status_code == 200
        assert "data-merkle-root" in text_of(response) and "data-next-step" not in text_of(response)


class TestContributors:
    def test_the_table_refreshes_when_an_upload_finishes(self, alice, sealed_rows):  # noqa: F811
        version = sealed_rows()
        version.state = VersionState.UPLOADING
        version.save(update_fields=["state"])
        page = text_of(client_for(alice).get(f"/data/versions/{version.public_id}/"))
        section = re.search(r'<section class="card" id="contributors"([^>]*)>', page)
        assert section is not None
        attributes = section.group(1)
        assert 'hx-trigger="sealroom:uploaded from:body"' in attributes
        assert 'hx-select="#contributors"' in attributes
        assert f'hx-get="/data/versions/{version.public_id}/"' in attributes
        assert re.search(r"<td data-files>1</td>", page)


class TestDuplicatesAfterReplacement:
    def test_exact_duplicates_say_they_were_compared_after_desensitization(self, alice, sealed_rows):  # noqa: F811
        version = sealed_rows()
        Finding.objects.create(
            version=version,
            record_id=4,
            kind="exact_duplicate",
            detail="same text as record 1 after normalization",
            group="1",
            score=1.0,
        )
        page = text_of(client_for(alice).get(f"/data/versions/{version.public_id}/report/"))
        note = re.search(r"<p class=\"field__help\" data-pii-note>([^<]*)</p>", page)
        assert note is not None
        assert "52 entities replaced" in note.group(1)
        assert "differed only in the personal data that was replaced" in note.group(1)
        assert "the originals may have differed in what was replaced" in page

    def test_no_such_note_when_nothing_was_replaced(self, alice, sealed_rows):  # noqa: F811
        version = sealed_rows()
        version.report.counts = {"entities": {}}
        version.report.save(update_fields=["counts"])
        Finding.objects.create(
            version=version, record_id=4, kind="exact_duplicate", detail="same text", group="1", score=1.0
        )
        page = text_of(client_for(alice).get(f"/data/versions/{version.public_id}/report/"))
        assert "data-pii-note" not in page


def test_every_page_links_a_favicon_that_exists(bob):
    page = client_for(bob).get("/").content.decode()
    icons = re.findall(r'<link rel="icon" href="/static/([^"]+)"', page)
    assert "favicon.ico" in icons and "favicon.svg" in icons
    found = finders.find("favicon.ico")
    assert found is not None
    with open(found, "rb") as handle:
        assert handle.read(4) == b"\x00\x00\x01\x00"  # an ICO header
