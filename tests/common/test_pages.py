"""Pages of the foundation: who sees what, forms and their errors, CSP."""

from __future__ import annotations

import re

import pytest
from django.core import mail
from django.test import Client
from django.urls import reverse

from common import services
from common.models import ApiToken, AuditEvent, Invitation, Membership, Organisation, User
from tests.factories import DEFAULT_PASSWORD, MembershipFactory, UserFactory
from tests.helpers import login_with_otp

pytestmark = pytest.mark.django_db


def client_for(user: User | None) -> Client:
    client = Client()
    if user is None:
        return client
    if user.is_operator:
        login_with_otp(client, user)
    else:
        client.force_login(user)
    return client


@pytest.fixture
def cast(alice, acme_member, acme_viewer, carol, ops, audrey, bob):
    return {
        "admin": alice,
        "member": acme_member,
        "viewer": acme_viewer,
        "outsider": carol,
        "operator": ops,
        "auditor": audrey,
        "other_admin": bob,
    }


def html_of(response) -> str:
    return response.content.decode()


def make_user(username: str) -> User:
    user = UserFactory(username=username)
    assert isinstance(user, User)
    return user


def first_group(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    assert match is not None, pattern
    return match.group(1)


class TestSignedOutVisitors:
    @pytest.mark.parametrize(
        "url",
        ["/", "/tokens/", "/account/", "/account/password/", "/organisations/org_0123456789abcdef/"],
    )
    def test_are_sent_to_sign_in_and_back(self, client, url):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"] == f"{reverse('common:login')}?next={url}"

    @pytest.mark.parametrize("url", ["/login/", "/signup/", "/password-reset/"])
    def test_see_the_public_pages(self, client, url):
        assert client.get(url).status_code == 200


class TestPageShell:
    @pytest.mark.parametrize("url", ["/login/", "/signup/", "/"])
    def test_csp_header_forbids_inline_code(self, alice, url):
        response = client_for(alice).get(url)
        policy = response["Content-Security-Policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert "unsafe-eval" not in policy

    @pytest.mark.parametrize("url", ["/", "/tokens/", "/account/", "/login/two-factor/setup/"])
    def test_pages_carry_no_inline_script_or_style(self, alice, acme, url):
        html = html_of(client_for(alice).get(url))
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html)
        assert "<style" not in html
        assert not re.search(r"\sstyle=", html)
        assert not re.search(r"\son[a-z]+=", html)
        assert "/static/vendor/htmx.min.js" in html
        assert "/static/css/sealroom.css" in html
        assert "//cdn" not in html and "https://" not in html

    def test_has_landmarks_skip_link_and_navigation(self, alice, acme):
        html = html_of(client_for(alice).get("/"))
        assert '<a class="skip-link" href="#main">' in html
        assert '<main id="main"' in html
        assert '<nav class="site-nav" aria-label="Main">' in html
        assert f'href="/organisations/{acme.public_id}/"' in html
        assert 'action="/logout/"' in html

    def test_static_files_exist(self):
        from django.contrib.staticfiles import finders

        for path in ("vendor/htmx.min.js", "css/sealroom.css", "js/sealroom.js", "favicon.svg"):
            assert finders.find(path), path


class TestDashboard:
    def test_lists_the_organisations_and_roles(self, alice, acme):
        other = Organisation.objects.create(name="Second Org", slug="second-org", is_trainer=True)
        MembershipFactory(user=alice, organisation=other, role="viewer")
        html = html_of(client_for(alice).get("/"))
        assert "Acme Corpora" in html and "Second Org" in html
        assert "Admin" in html and "Viewer" in html
        assert 'id="org-switch"' in html

    @pytest.mark.parametrize("role", ["outsider", "operator", "auditor"])
    def test_renders_for_people_without_an_organisation(self, cast, role):
        response = client_for(cast[role]).get("/")
        assert response.status_code == 200
        assert "not a member of any organisation" in html_of(response)


class TestOrganisationSwitcher:
    def test_switches_to_one_of_my_organisations(self, alice, acme, bolt):
        MembershipFactory(user=alice, organisation=bolt, role="member")
        client = client_for(alice)
        response = client.post(reverse("common:org_switch"), {"org_id": bolt.public_id, "next": "/tokens/"})
        assert response["Location"] == "/tokens/"
        assert client.session["org_id"] == bolt.pk

    def test_another_organisation_is_not_found(self, alice, bolt):
        client = client_for(alice)
        assert client.post(reverse("common:org_switch"), {"org_id": bolt.public_id}).status_code == 404
        assert "org_id" not in client.session

    def test_an_empty_choice_goes_back_with_a_message(self, alice):
        response = client_for(alice).post(reverse("common:org_switch"), {}, follow=True)
        assert "Choose one of your organisations." in html_of(response)

    @pytest.mark.parametrize("raw", ["²", "9" * 25, "-1", "0x10", "1", "org_1"])
    def test_an_id_that_is_not_one_goes_back_with_a_message(self, alice, raw):
        # "²".isdigit() is true and int("²") fails; 25 nines overflow a bigint: both were a 500.
        response = client_for(alice).post(reverse("common:org_switch"), {"org_id": raw}, follow=True)
        assert response.status_code == 200
        assert "Choose one of your organisations." in html_of(response)


class TestOrganisationPage:
    @pytest.mark.parametrize(
        ("role", "status"),
        [
            ("admin", 200),
            ("member", 200),
            ("viewer", 200),
            ("outsider", 404),
            ("operator", 404),
            ("auditor", 404),
            ("other_admin", 404),
        ],
    )
    def test_is_for_members_only(self, cast, acme, role, status):
        response = client_for(cast[role]).get(reverse("common:org", args=[acme.public_id]))
        assert response.status_code == status
        if status == 200:
            assert "mike" in html_of(response) and "vera" in html_of(response)

    def test_admins_see_the_forms(self, cast, acme):
        html = html_of(client_for(cast["admin"]).get(reverse("common:org", args=[acme.public_id])))
        assert "Invite someone" in html
        assert "Change role" in html and "Remove" in html

    @pytest.mark.parametrize("role", ["member", "viewer"])
    def test_others_do_not_see_the_forms(self, cast, acme, role):
        html = html_of(client_for(cast[role]).get(reverse("common:org", args=[acme.public_id])))
        assert "Invite someone" not in html
        assert "Change role" not in html and "Remove" not in html


class TestMemberManagement:
    def invite(self, user, org, data):
        return client_for(user).post(reverse("common:org_invite", args=[org.public_id]), data)

    def test_an_admin_invites_by_e_mail(self, alice, acme, django_capture_on_commit_callbacks):
        with django_capture_on_commit_callbacks(execute=True):
            response = self.invite(alice, acme, {"email": "new@example.test", "role": "member"})
        assert response.status_code == 302
        invitation = Invitation.objects.get(email="new@example.test")
        assert invitation.role == "member"
        (message,) = mail.outbox
        assert "/invitations/" in message.body

    def test_invitation_errors_show_next_to_the_field(self, alice, acme, acme_member):
        response = self.invite(alice, acme, {"email": "mike@example.test", "role": "member"})
        assert response.status_code == 200
        assert 'id="id_email_error"' in html_of(response)
        assert "already a member" in html_of(response)
        response = self.invite(alice, acme, {})
        assert response.status_code == 200
        assert 'aria-describedby="id_email_error"' in html_of(response)

    @pytest.mark.parametrize(("role", "status"), [("member", 403), ("viewer", 403), ("outsider", 404)])
    def test_only_admins_invite(self, cast, acme, role, status):
        response = self.invite(cast[role], acme, {"email": "x@example.test", "role": "viewer"})
        assert response.status_code == status
        assert not Invitation.objects.exists()

    def test_an_admin_changes_a_role(self, alice, acme, acme_member):
        membership = Membership.objects.get(user=acme_member)
        url = reverse("common:org_member_role", args=[acme.public_id, membership.public_id])
        response = client_for(alice).post(url, {"role": "viewer"})
        assert response.status_code == 302
        membership.refresh_from_db()
        assert membership.role == "viewer"
        assert AuditEvent.objects.filter(action="membership.role_change").exists()

    def test_an_empty_role_is_shown_beside_the_row(self, alice, acme, acme_member):
        membership = Membership.objects.get(user=acme_member)
        url = reverse("common:org_member_role", args=[acme.public_id, membership.public_id])
        response = client_for(alice).post(url, {})
        assert response.status_code == 200
        assert f'aria-describedby="role-{membership.public_id}-error"' in html_of(response)

    def test_the_last_admin_stays(self, alice, acme):
        membership = Membership.objects.get(user=alice)
        url = reverse("common:org_member_role", args=[acme.public_id, membership.public_id])
        response = client_for(alice).post(url, {"role": "viewer"}, follow=True)
        assert "at least one admin" in html_of(response)
        membership.refresh_from_db()
        assert membership.role == "admin"

    def test_an_admin_removes_a_member(self, alice, acme, acme_member):
        membership = Membership.objects.get(user=acme_member)
        url = reverse("common:org_member_remove", args=[acme.public_id, membership.public_id])
        assert client_for(alice).post(url).status_code == 302
        assert not Membership.objects.filter(pk=membership.pk).exists()

    @pytest.mark.parametrize(("role", "status"), [("member", 403), ("viewer", 403), ("outsider", 404)])
    def test_only_admins_change_or_remove(self, cast, acme, role, status):
        target = Membership.objects.get(user=cast["viewer"])
        for name in ("common:org_member_role", "common:org_member_remove"):
            url = reverse(name, args=[acme.public_id, target.public_id])
            assert client_for(cast[role]).post(url, {"role": "admin"}).status_code == status
        target.refresh_from_db()
        assert target.role == "viewer"

    def test_another_organisations_member_is_not_found(self, alice, acme, bob, bolt):
        bobs = Membership.objects.get(user=bob)
        url = reverse("common:org_member_remove", args=[acme.public_id, bobs.public_id])
        assert client_for(alice).post(url).status_code == 404
        url = reverse("common:org_member_remove", args=[bolt.public_id, bobs.public_id])
        assert client_for(alice).post(url).status_code == 404
        assert Membership.objects.filter(pk=bobs.pk).exists()


class TestInvitationPage:
    @pytest.fixture
    def raw(self, alice, acme):
        _invitation, raw = services.invitation_create(
            actor=alice, organisation=acme, email="dora@example.test", role="member"
        )
        return raw

    def test_offers_sign_in_or_sign_up_to_visitors(self, client, raw):
        response = client.get(f"/invitations/{raw}/")
        html = html_of(response)
        assert response.status_code == 200
        assert "Join Acme Corpora" in html
        assert f"/login/?next=/invitations/{raw}/" in html
        assert f"/signup/?next=/invitations/{raw}/" in html
        assert client.post(f"/invitations/{raw}/")["Location"].startswith("/login/")

    def test_the_invited_person_joins(self, raw, acme):
        dora = make_user("dora")
        client = client_for(dora)
        assert "Accept and join" in html_of(client.get(f"/invitations/{raw}/"))
        response = client.post(f"/invitations/{raw}/")
        assert response["Location"] == reverse("common:org", args=[acme.public_id])
        assert Membership.objects.get(user=dora, organisation=acme).role == "member"
        assert client.session["org_id"] == acme.pk
        again = client.post(f"/invitations/{raw}/")
        assert again.status_code == 409

    def test_someone_else_may_not_use_it(self, raw, carol):
        client = client_for(carol)
        assert "this invitation is for dora@example.test" in html_of(client.get(f"/invitations/{raw}/"))
        assert client.post(f"/invitations/{raw}/").status_code == 403

    def test_an_unknown_token_is_not_found(self, client, carol):
        assert client.get("/invitations/nonsense/").status_code == 404
        assert client_for(carol).post("/invitations/nonsense/").status_code == 404

    def test_sign_up_comes_back_to_the_invitation(self, client, raw):
        response = client.post(
            f"/signup/?next=/invitations/{raw}/",
            {
                "username": "dora",
                "email": "dora@example.test",
                "password": DEFAULT_PASSWORD,
                "password_again": DEFAULT_PASSWORD,
                "organisation_name": "Dora Data",
                "kind": "provider",
                "next": f"/invitations/{raw}/",
            },
        )
        assert response["Location"] == f"/invitations/{raw}/"


class TestSignUp:
    def valid(self, **changes: str) -> dict[str, str]:
        data = {
            "username": "nadia",
            "email": "nadia@example.test",
            "password": DEFAULT_PASSWORD,
            "password_again": DEFAULT_PASSWORD,
            "organisation_name": "Nadia Labs",
            "kind": "both",
        }
        data.update(changes)
        return data

    def test_creates_the_user_and_organisation_and_signs_in(self, client):
        response = client.post("/signup/", self.valid())
        assert response["Location"] == "/"
        org = Organisation.objects.get(name="Nadia Labs")
        assert (org.is_provider, org.is_trainer) == (True, True)
        assert Membership.objects.get(organisation=org).role == "admin"
        assert client.get("/").status_code == 200
        assert client.session["org_id"] == org.pk

    def test_service_errors_show_next_to_their_fields(self, client, alice, acme):
        data = self.valid(
            username="alice", password="123", password_again="123", organisation_name="Acme Corpora"
        )
        response = client.post("/signup/", data)
        html = html_of(response)
        assert response.status_code == 200
        for field in ("username", "password", "organisation_name"):
            assert f'id="id_{field}_error"' in html
            assert re.search(
                rf'<input[^>]*aria-describedby="[^"]*id_{field}_error"[^>]*id="id_{field}"', html
            )
        assert "This username is taken." in html
        assert "This organisation name is taken." in html
        assert "This password is too short." in html
        # What the person typed is kept (but never the password).
        assert 'value="alice"' in html and 'value="123"' not in html

    def test_form_errors_are_shown_before_calling_the_service(self, client):
        response = client.post("/signup/", self.valid(password_again="different", kind=""))
        html = html_of(response)
        assert "The two passwords differ." in html
        assert 'id="id_kind_error"' in html
        assert not User.objects.filter(username="nadia").exists()

    def test_signed_in_people_are_sent_home(self, alice):
        assert client_for(alice).get("/signup/")["Location"] == "/"


class TestTokensPage:
    def create(self, client: Client, org: Organisation, **changes):
        data = {"organisation": org.pk, "name": "ci", "scopes": ["read"], "expires_in_days": 30}
        data.update(changes)
        return client.post(reverse("common:tokens"), data)

    @pytest.mark.parametrize("role", ["admin", "member", "viewer", "outsider", "operator", "auditor"])
    def test_renders_for_every_signed_in_person(self, cast, role):
        assert client_for(cast[role]).get(reverse("common:tokens")).status_code == 200

    def test_shows_the_secret_once(self, alice, acme):
        client = client_for(alice)
        response = self.create(client, acme, scopes=["read", "provide"])
        assert response.status_code == 200
        assert "no-store" in response["Cache-Control"]
        token = ApiToken.objects.get(user=alice)
        secret = first_group(r'id="token-secret"[^>]*value="([^"]+)"', html_of(response))
        assert secret.startswith(f"srk_{token.prefix}_")
        assert token.scopes == ["provide", "read"]
        listing = html_of(client.get(reverse("common:tokens")))
        assert token.prefix in listing and "ci" in listing
        assert secret not in listing

    def test_errors_show_next_to_fields(self, alice, acme):
        response = self.create(client_for(alice), acme, name="", scopes=[], expires_in_days=9999)
        html = html_of(response)
        assert response.status_code == 200
        for field in ("name", "scopes", "expires_in_days"):
            assert f'id="id_{field}_error"' in html
        assert not ApiToken.objects.exists()

    def test_an_empty_form_is_answered_with_errors(self, carol):
        response = client_for(carol).post(reverse("common:tokens"), {})
        assert response.status_code == 200
        assert "join one first" in html_of(response)

    def test_a_viewer_gets_read_tokens_only(self, acme_viewer, acme):
        response = self.create(client_for(acme_viewer), acme, scopes=["provide"])
        assert response.status_code == 403
        assert "Viewers may only create read-only tokens." in html_of(response)
        assert self.create(client_for(acme_viewer), acme).status_code == 200

    def test_another_organisation_cannot_be_chosen(self, alice, bolt):
        response = self.create(client_for(alice), bolt)
        assert response.status_code == 200
        assert 'id="id_organisation_error"' in html_of(response)
        assert not ApiToken.objects.exists()

    def test_revokes_a_token(self, alice, acme):
        token, _raw = services.api_token_create(user=alice, organisation=acme, name="old", scopes=["read"])
        client = client_for(alice)
        response = client.post(reverse("common:token_revoke", args=[token.public_id]))
        assert response["Location"] == reverse("common:tokens")
        token.refresh_from_db()
        assert token.revoked_at is not None
        assert "Revoked" in html_of(client.get(reverse("common:tokens")))

    def test_htmx_gets_the_row_back(self, alice, acme):
        token, _raw = services.api_token_create(user=alice, organisation=acme, name="old", scopes=["read"])
        response = client_for(alice).post(
            reverse("common:token_revoke", args=[token.public_id]), HTTP_HX_REQUEST="true"
        )
        assert response.status_code == 200
        assert html_of(response).lstrip().startswith(f'<tr id="token-{token.public_id}"')
        assert "Revoked" in html_of(response)

    @pytest.mark.parametrize(
        ("role", "status"),
        [("admin", 302), ("member", 403), ("viewer", 403), ("outsider", 404), ("operator", 404)],
    )
    def test_someone_elses_token(self, cast, acme, role, status):
        owner = make_user("owner")
        MembershipFactory(user=owner, organisation=acme, role="member")
        token, _raw = services.api_token_create(user=owner, organisation=acme, name="t", scopes=["read"])
        assert (
            client_for(cast[role]).post(reverse("common:token_revoke", args=[token.public_id])).status_code
            == status
        )


class TestAccountAndPasswords:
    def test_account_page_shows_two_factor_status(self, alice):
        html = html_of(client_for(alice).get(reverse("common:account")))
        assert "Turn on two-factor sign-in" in html

    def test_password_change(self, alice):
        client = client_for(alice)
        response = client.post(
            reverse("common:password_change"),
            {
                "old_password": DEFAULT_PASSWORD,
                "new_password1": "a brand new passphrase",
                "new_password2": "a brand new passphrase",
            },
        )
        assert response["Location"] == reverse("common:password_change_done")
        alice.refresh_from_db()
        assert alice.check_password("a brand new passphrase")
        assert client.get("/").status_code == 200
        assert AuditEvent.objects.filter(action="auth.password_changed").exists()

    def test_password_change_errors_show_next_to_fields(self, alice):
        response = client_for(alice).post(reverse("common:password_change"), {"old_password": "nope"})
        assert response.status_code == 200
        assert 'id="id_old_password_error"' in html_of(response)

    def test_password_reset_by_e_mail(self, client, alice):
        response = client.post(reverse("common:password_reset"), {"email": alice.email})
        assert response["Location"] == reverse("common:password_reset_done")
        (message,) = mail.outbox
        link = first_group(r"http://testserver(/password-reset/[^/]+/[^/]+/)", str(message.body))
        form_page = client.get(link, follow=True)
        assert "Choose a new password" in html_of(form_page)
        response = client.post(
            form_page.redirect_chain[-1][0],
            {"new_password1": "another fine passphrase", "new_password2": "another fine passphrase"},
        )
        assert response["Location"] == reverse("common:password_reset_complete")
        alice.refresh_from_db()
        assert alice.check_password("another fine passphrase")
        assert AuditEvent.objects.filter(action="auth.password_reset").exists()

    def test_a_bad_reset_link_says_so(self, client):
        response = client.get("/password-reset/MQ/bad-token/")
        assert "This link does not work" in html_of(response)


class TestErrorPages:
    def test_not_found_page(self, alice):
        response = client_for(alice).get("/no-such-page/")
        assert response.status_code == 404
        assert "Not found" in html_of(response)

    def test_not_permitted_page_says_why(self, acme_viewer, acme):
        response = client_for(acme_viewer).post(reverse("common:org_invite", args=[acme.public_id]), {})
        assert response.status_code == 403
        assert "Only admins of Acme Corpora manage its members." in html_of(response)
