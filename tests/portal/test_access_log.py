"""The provider's data access log: who trained on which version, when, how much, under which license."""

from __future__ import annotations

import csv
import io
from typing import Any, cast

import pytest
from django.test import Client
from django.urls import reverse

from common.models import AuditEvent, Organisation, User
from custody import services as custody
from custody.models import Grant, GrantPurpose
from marketplace.models import License
from marketplace.services.orders import order_place
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from tests.marketplace.orders.conftest import cora, fund, market  # noqa: F401

pytestmark = pytest.mark.django_db

LOG = reverse("portal:access_log")
EXPORT = reverse("portal:access_log_export")


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def run_job(license_: License, consumer_ref: str, tokens: int | None) -> None:
    """What the training launcher does through custody: reserve, open the stream, record usage."""
    grant = license_.grant
    custody.grant_job_reserve(grant=grant, consumer_ref=consumer_ref)
    custody.grant_stream_open(grant=grant, consumer_ref=consumer_ref, purpose=GrantPurpose.LICENSE)
    custody.usage_record(grant=grant, consumer_ref=consumer_ref, kind="job_started", quantity=1)
    if tokens is not None:
        custody.usage_record(grant=grant, consumer_ref=consumer_ref, kind="tokens_trained", quantity=tokens)


@pytest.fixture
def licensed(market, fund, bolt, bob) -> License:  # noqa: F811
    offer = market("metered", max_jobs=200)
    fund(bolt, 1_000_000)
    return License.objects.select_related("grant", "order").get(
        order=order_place(buyer=bolt, offer=offer, actor=bob)
    )


def csv_rows(response: Any) -> list[dict[str, str]]:
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


class TestAccessLogPage:
    def test_shows_who_trained_on_which_version_when_how_much_and_under_which_license(self, alice, licensed):
        run_job(licensed, "job-41", 12_345)
        html = client_for(alice).get(LOG).content.decode()
        version = licensed.grant.version
        assert "Bolt Models" in html
        assert f"{version.dataset.name} · version {version.number}" in html
        assert licensed.ref in html
        assert "research" in html  # the purposes the license was sold for
        assert "<code>job-41</code>" in html
        assert "<td data-tokens>12345</td>" in html

    def test_a_job_that_has_not_read_the_data_yet_says_so(self, alice, licensed):
        custody.grant_job_reserve(grant=licensed.grant, consumer_ref="job-queued")
        html = client_for(alice).get(LOG).content.decode()
        assert "<code>job-queued</code>" in html
        assert "not yet" in html and "not recorded" in html

    def test_every_stream_open_of_the_job_is_counted(self, alice, licensed):
        run_job(licensed, "job-7", 10)
        # A retried attempt opens the stream again under the same job.
        custody.grant_stream_open(grant=licensed.grant, consumer_ref="job-7", purpose=GrantPurpose.LICENSE)
        assert "(2 opens)" in client_for(alice).get(LOG).content.decode()

    def test_a_contributor_sees_jobs_on_the_version_it_contributed_to(self, cora, licensed):  # noqa: F811
        run_job(licensed, "job-1", 100)
        cora_admin = UserFactory(username="cory")
        MembershipFactory(user=cora_admin, organisation=cora, role="viewer")
        assert "<code>job-1</code>" in client_for(cora_admin).get(LOG).content.decode()

    def test_another_provider_sees_none_of_it(self, licensed):
        run_job(licensed, "job-1", 100)
        dora = cast(Organisation, OrganisationFactory(name="Dora Data", is_provider=True))
        dan = UserFactory(username="dan")
        MembershipFactory(user=dan, organisation=dora, role="admin")
        client = client_for(dan)
        html = client.get(LOG).content.decode()
        assert "job-1" not in html and "Bolt Models" not in html
        assert csv_rows(client.get(EXPORT)) == []

    def test_platform_grants_are_not_licensee_jobs(self, alice, licensed):
        gate = Grant.objects.create(
            version=licensed.grant.version, purpose=GrantPurpose.GATE, external_ref="gate-check"
        )
        custody.grant_job_reserve(grant=gate, consumer_ref="gate-job")
        assert "gate-job" not in client_for(alice).get(LOG).content.decode()

    def test_a_trainer_organisation_is_refused(self, bob):
        assert client_for(bob).get(LOG).status_code == 403
        assert client_for(bob).get(EXPORT).status_code == 403

    def test_signed_out_goes_to_sign_in(self):
        assert Client().get(LOG).status_code == 302

    def test_pages_cost_the_same_queries_for_three_or_sixty_jobs(
        self, alice, licensed, django_assert_max_num_queries
    ):
        for n in range(3):
            run_job(licensed, f"job-{n}", 1000 + n)
        client = client_for(alice)
        with django_assert_max_num_queries(12) as few:
            assert client.get(LOG).status_code == 200
        for n in range(3, 60):
            run_job(licensed, f"job-{n}", 1000 + n)
        with django_assert_max_num_queries(len(few.captured_queries)):
            html = client.get(LOG).content.decode()
        assert html.count("<td data-tokens>") == 50
        assert "Page 1 of 2" in html
        second = client.get(LOG, {"page": 2}).content.decode()
        assert second.count("<td data-tokens>") == 10
        assert "<code>job-0</code>" in second


class TestAccessLogExport:
    def test_exports_every_job_oldest_first_with_license_and_tokens(self, alice, licensed):
        for n in range(3):
            run_job(licensed, f"job-{n}", 500 * (n + 1))
        custody.grant_job_reserve(grant=licensed.grant, consumer_ref="job-queued")
        response = client_for(alice).get(EXPORT)
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/csv")
        assert "attachment" in response["Content-Disposition"]
        rows = csv_rows(response)
        assert [r["consumer_ref"] for r in rows] == ["job-0", "job-1", "job-2", "job-queued"]
        assert [r["tokens_trained"] for r in rows] == ["500", "1000", "1500", ""]
        assert {r["license"] for r in rows} == {licensed.ref}
        assert {r["order"] for r in rows} == {licensed.order.ref}
        assert {r["licensee"] for r in rows} == {"Bolt Models"}
        assert [r["stream_opens"] for r in rows] == ["1", "1", "1", "0"]
        assert rows[0]["started_at"] and not rows[3]["started_at"]

    def test_exported_cells_cannot_run_as_spreadsheet_formulas(self, alice, market, fund):  # noqa: F811
        evil = cast(Organisation, OrganisationFactory(name="=HYPERLINK(1)", is_trainer=True))
        buyer = cast(User, UserFactory(username="eve"))
        MembershipFactory(user=buyer, organisation=evil, role="admin")
        fund(evil, 1_000_000)
        license_ = License.objects.get(order=order_place(buyer=evil, offer=market("metered"), actor=buyer))
        run_job(license_, "job-1", 1)
        rows = csv_rows(client_for(alice).get(EXPORT))
        assert rows[0]["licensee"] == "'=HYPERLINK(1)"

    def test_each_export_is_audited_before_the_download(self, alice, acme, licensed):
        run_job(licensed, "job-1", 10)
        client = client_for(alice)
        for _ in range(2):
            response = client.get(EXPORT)
            assert response.status_code == 200
            csv_rows(response)
        events = list(AuditEvent.objects.filter(action="portal.access_log_export").order_by("seq"))
        assert len(events) == 2
        assert {(e.actor_name, e.organisation_id, e.object_type, e.object_id) for e in events} == {
            ("alice", acme.pk, "access_log", str(acme.pk))
        }
        assert events[0].details == {"format": "csv"}

    def test_a_refused_export_is_not_audited(self, bob):
        assert client_for(bob).get(EXPORT).status_code == 403
        assert not AuditEvent.objects.filter(action="portal.access_log_export").exists()
