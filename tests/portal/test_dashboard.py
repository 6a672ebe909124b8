"""The organisation dashboard at "/": custody, listings, orders, earnings, jobs and notices at a glance."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.conf import settings
from django.shortcuts import resolve_url
from django.test import Client
from django.urls import NoReverseMatch, resolve, reverse

from common.notifications import notify_event
from custody import services as custody
from custody.models import GrantPurpose
from marketplace.models import License
from marketplace.services.orders import order_place
from marketplace.services.settlement import usage_settle
from tests.factories import DEFAULT_PASSWORD, MembershipFactory, OrganisationFactory, UserFactory
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from tests.marketplace.orders.conftest import cora, fund, market  # noqa: F401
from training.models import BaseModel, TrainingJob

pytestmark = pytest.mark.django_db

HOME = reverse("portal:home")


def client_for(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def html_of(user: Any) -> str:
    response = client_for(user).get(HOME)
    assert response.status_code == 200
    return response.content.decode()


def buy_and_train(offer: Any, bolt: Any, bob: Any, jobs: int) -> License:
    license_ = License.objects.select_related("grant").get(
        order=order_place(buyer=bolt, offer=offer, actor=bob)
    )
    base = BaseModel.objects.get(name="gpt2-tiny", owner=None)
    for n in range(jobs):
        ref = f"job-{license_.pk}-{n}"
        custody.grant_job_reserve(grant=license_.grant, consumer_ref=ref)
        custody.grant_stream_open(grant=license_.grant, consumer_ref=ref, purpose=GrantPurpose.LICENSE)
        usage = custody.usage_record(grant=license_.grant, consumer_ref=ref, kind="job_started", quantity=1)
        usage_settle(usage_id=usage.pk)
        TrainingJob.objects.create(organisation=bolt, grant=license_.grant, template="causal_lm", base=base)
    return license_


class TestLanding:
    def test_the_dashboard_is_the_signed_in_home_page(self):
        assert resolve(HOME).view_name == "portal:home"

    def test_signed_out_goes_to_sign_in(self):
        assert Client().get(HOME).status_code == 302

    def test_common_keeps_no_home_page_of_its_own(self):
        with pytest.raises(NoReverseMatch):
            reverse("common:home")
        assert resolve_url(settings.LOGIN_REDIRECT_URL) == HOME == "/"

    def test_sign_in_lands_on_the_dashboard(self, alice):
        response = Client().post(
            reverse("common:login"), {"username": "alice", "password": DEFAULT_PASSWORD}, follow=True
        )
        assert response.redirect_chain[-1][0] == HOME
        assert "portal/dashboard.html" in [t.name for t in response.templates]

    def test_the_brand_and_error_pages_link_to_the_dashboard(self, alice):
        client = client_for(alice)
        assert f'<a class="brand" href="{HOME}">' in client.get(reverse("common:account")).content.decode()
        missing = client.get(reverse("custody:dataset", args=["ds_0000000000000000"]))
        assert missing.status_code == 404
        assert f'<a href="{HOME}">Back to your dashboard</a>' in missing.content.decode()

    def test_the_main_navigation_marks_the_dashboard_current_only_there(self, audrey):
        current = f'<a href="{HOME}" aria-current="page">Dashboard</a>'
        assert current in html_of(audrey)
        console = client_for(audrey).get(reverse("console:home")).content.decode()
        assert current not in console
        assert f'<a href="{HOME}">Dashboard</a>' in console


class TestProviderDashboard:
    def test_shows_datasets_by_state_and_the_versions_still_to_seal(self, alice, acme):
        dataset = custody.dataset_create(actor=alice, organisation=acme, name="Support tickets")
        version = custody.version_create(actor=alice, dataset=dataset)
        html = html_of(alice)
        assert "1 dataset." in html
        assert 'data-state="uploading">Uploading 1</span>' in html
        assert f'href="{reverse("custody:version", args=[version.public_id])}"' in html
        assert "Support tickets · version 1" in html

    def test_shows_listings_pending_orders_earnings_and_who_trained(self, alice, bolt, bob, market, fund):  # noqa: F811
        fund(bolt, 1_000_000)
        buy_and_train(market("fixed"), bolt, bob, jobs=1)
        market("fixed", approval=True)
        pending = market("fixed", approval=True)
        order_place(buyer=bolt, offer=pending, actor=bob)
        html = html_of(alice)
        assert '<span class="tag" data-listings="published">Published 3</span>' in html
        assert 'data-orders-pending="1"' in html
        assert "1 order awaits your approval." in html
        # 500.00 with a 10 % fee, Acme's 75 %: 337.50 (33,750 cents), shown in euros.
        assert "<dd data-earned>€337.50</dd>" in html
        assert '<dd data-balance="rights_holder_payable-EUR">€337.50</dd>' in html
        assert "Bolt Models" in html and "(1 opens)" not in html
        assert reverse("portal:access_log") in html
        assert reverse("marketplace:earnings") in html

    def test_a_provider_sees_no_trainer_panels(self, alice):
        html = html_of(alice)
        assert "Training jobs" not in html
        assert reverse("training:jobs") not in html


class TestTrainerDashboard:
    def test_shows_jobs_by_state_licenses_and_orders(self, bolt, bob, market, fund):  # noqa: F811
        fund(bolt, 1_000_000)
        license_ = buy_and_train(market("fixed"), bolt, bob, jobs=2)
        html = html_of(bob)
        assert 'data-state="queued">Queued 2</span>' in html
        assert 'data-licenses-active="1"' in html
        assert '<dd data-balance="organisation_balance-EUR">€9,500.00</dd>' in html
        assert license_.order.ref in html
        job = TrainingJob.objects.filter(organisation=bolt).first()
        assert job is not None and f'href="{reverse("training:job", args=[job.public_id])}"' in html
        assert reverse("custody:datasets") not in html
        assert "Who trained on your data" not in html

    def test_shows_the_unread_notifications(self, bolt, bob):
        for n in range(3):
            notify_event(organisation=bolt, kind="job.succeeded", subject=f"Job {n} succeeded", payload={})
        html = html_of(bob)
        assert 'data-unread="3"' in html and "3 unread notifications" in html


class TestEveryoneElse:
    def test_staff_without_an_organisation_get_the_plain_dashboard(self, audrey):
        html = html_of(audrey)
        assert "not a member of any organisation" in html
        assert reverse("console:home") in html

    def test_a_member_of_both_kinds_sees_both(self, alice, acme, bolt, bob):
        acme.is_trainer = True
        acme.save(update_fields=["is_trainer"])
        html = html_of(alice)
        assert "Data in custody" in html and "Training jobs" in html


class TestContributionsInvited:
    @pytest.fixture
    def dora(self, db) -> Any:
        return OrganisationFactory(name="Dora Data", is_provider=True)

    def member_of(self, org: Any, role: str) -> Any:
        user = UserFactory(username=f"{org.slug}-{role}")
        MembershipFactory(user=user, organisation=org, role=role)
        return user

    def invite(self, alice: Any, acme: Any, dora: Any, name: str) -> Any:
        dataset = custody.dataset_create(actor=alice, organisation=acme, name=name)
        version = custody.version_create(actor=alice, dataset=dataset)
        custody.contributor_invite(actor=alice, version=version, organisation=dora)
        return version

    def test_the_invited_organisation_sees_the_version_with_a_way_to_upload(self, alice, acme, dora):
        version = self.invite(alice, acme, dora, "Call notes")
        html = html_of(self.member_of(dora, "member"))
        assert "Contributions invited" in html
        row = re.search(rf'<tr data-invited-version="{version.public_id}">(.*?)</tr>', html, re.S)
        assert row is not None
        version_url = reverse("custody:version", args=[version.public_id])
        assert f'<a href="{version_url}">Call notes · version 1</a>' in row.group(1)
        assert "<td>Acme Corpora</td>" in row.group(1)
        assert f'<a href="{version_url}#upload-heading">Upload a file</a>' in row.group(1)
        assert "<td data-my-files>0</td>" in row.group(1)
        assert "by alice" in row.group(1)

    def test_counts_the_files_the_organisation_uploaded_there(self, alice, acme, dora):
        version = self.invite(alice, acme, dora, "Call notes")
        member = self.member_of(dora, "member")
        for name in ("a.jsonl", "b.jsonl"):
            custody.contribution_start(actor=member, organisation=dora, version=version, filename=name)
        assert "<td data-my-files>2</td>" in html_of(member)

    def test_a_viewer_sees_the_invitation_but_no_upload_link(self, alice, acme, dora):
        self.invite(alice, acme, dora, "Call notes")
        html = html_of(self.member_of(dora, "viewer"))
        assert "Contributions invited" in html
        assert "Upload a file" not in html

    def test_open_versions_come_before_closed_ones(self, alice, acme, dora):
        closed = self.invite(alice, acme, dora, "Old notes")
        custody.version_reject(actor=alice, version=closed, reason="")
        still_open = self.invite(alice, acme, dora, "New notes")
        html = html_of(self.member_of(dora, "admin"))
        order = re.findall(r'data-invited-version="(dsv_[0-9a-f]{16})"', html)
        assert order == [still_open.public_id, closed.public_id]

    def test_the_owner_and_uninvited_providers_see_no_invitations(self, alice, acme, dora):
        self.invite(alice, acme, dora, "Call notes")
        assert "Contributions invited" not in html_of(alice)
        other = OrganisationFactory(name="Eve Texts", is_provider=True)
        assert "Contributions invited" not in html_of(self.member_of(other, "admin"))

    def test_costs_the_same_queries_for_one_or_six_invitations(
        self, alice, acme, dora, django_assert_max_num_queries
    ):
        self.invite(alice, acme, dora, "Set 0")
        client = client_for(self.member_of(dora, "admin"))
        with django_assert_max_num_queries(40) as few:
            assert client.get(HOME).status_code == 200
        for n in range(1, 6):
            self.invite(alice, acme, dora, f"Set {n}")
        with django_assert_max_num_queries(len(few.captured_queries)):
            html = client.get(HOME).content.decode()
        assert html.count("data-invited-version=") == 6


class TestQueryCount:
    def test_the_dashboard_costs_the_same_queries_with_many_rows(
        self,
        alice,
        acme,
        bolt,
        bob,
        market,  # noqa: F811
        fund,  # noqa: F811
        django_assert_max_num_queries,
    ):
        # One user in both organisations, acting for each in turn.
        MembershipFactory(user=alice, organisation=bolt, role="admin")
        fund(bolt, 10_000_000)
        buy_and_train(market("fixed"), bolt, bob, jobs=1)
        client = client_for(alice)

        def count(org: Any) -> int:
            session = client.session
            session["org_id"] = org.pk
            session.save()
            with django_assert_max_num_queries(40) as captured:
                assert client.get(HOME).status_code == 200
            return len(captured.captured_queries)

        few = {org.pk: count(org) for org in (acme, bolt)}
        for _ in range(6):
            buy_and_train(market("fixed", max_jobs=10), bolt, bob, jobs=4)
        for n in range(10):
            custody.version_create(
                actor=alice, dataset=custody.dataset_create(actor=alice, organisation=acme, name=f"Set {n}")
            )
        assert {org.pk: count(org) for org in (acme, bolt)} == few
