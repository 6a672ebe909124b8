"""Sign-in: lockout, the TOTP second step, operators' two-factor rule, sign-out."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import SESSION_KEY
from django.test import Client
from django.urls import reverse
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from common import otp
from common.audit import audit_integrate
from common.models import AuditEvent, User
from tests.factories import DEFAULT_PASSWORD
from tests.helpers import login_with_otp, totp_device_for

LOGIN = reverse("common:login")
VERIFY = reverse("common:login_verify")
ENROLL = reverse("common:totp_enroll")
HOME = reverse("portal:home")

pytestmark = pytest.mark.django_db


def code_for(device: TOTPDevice, steps_ahead: int = 0) -> str:
    """The device's code now (or a later time step, since a code is good only once)."""
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time = time.time() + steps_ahead * device.step
    return f"{totp.token():0{device.digits}d}"


def sign_in(client: Client, username: str, password: str = DEFAULT_PASSWORD, **extra: str):
    return client.post(LOGIN, {"username": username, "password": password, **extra})


def is_signed_in(client: Client) -> bool:
    return SESSION_KEY in client.session


def events(action: str) -> list[AuditEvent]:
    audit_integrate()  # as the writers' commits would have: in seq order from here
    return list(AuditEvent.objects.filter(action=action).order_by("seq"))


@pytest.fixture
def three_strikes(settings):
    settings.LOCKOUT_FAILURES = 3
    settings.LOCKOUT_WINDOW_SECONDS = 900
    settings.LOCKOUT_SECONDS = 900


class TestPasswordStep:
    def test_signs_in_a_user_without_a_device_and_audits_it(self, client, alice):
        response = sign_in(client, "alice")
        assert response.status_code == 302
        assert response["Location"] == HOME
        assert is_signed_in(client)
        assert events("auth.login")[-1].details == {"second_factor": False}

    def test_follows_a_safe_next_and_ignores_another_site(self, client, alice):
        assert sign_in(client, "alice", next="/tokens/")["Location"] == "/tokens/"
        client.logout()
        assert sign_in(client, "alice", next="https://evil.example/")["Location"] == HOME

    def test_a_wrong_password_says_the_same_for_known_and_unknown_names(self, client, alice):
        known = sign_in(client, "alice", "wrong")
        unknown = sign_in(client, "nobody", "wrong")
        assert known.status_code == unknown.status_code == 200
        assert "The username or password is not right." in known.content.decode()
        assert "The username or password is not right." in unknown.content.decode()
        assert not is_signed_in(client)
        assert [e.details["reason"] for e in events("auth.login_failed")] == ["bad_credentials"] * 2


class TestLockout:
    def test_locks_after_the_configured_failures_and_says_until_when(self, client, alice, three_strikes):
        for _ in range(2):
            assert sign_in(client, "alice", "wrong").status_code == 200
        response = sign_in(client, "alice", "wrong")
        assert response.status_code == 429
        assert "Too many failed sign-ins" in response.content.decode()
        assert "paused until" in response.content.decode()
        (lockout,) = events("auth.lockout")
        assert lockout.actor_id == alice.pk

    def test_the_right_password_is_refused_while_locked(self, client, alice, three_strikes):
        for _ in range(3):
            sign_in(client, "alice", "wrong")
        response = sign_in(client, "alice")
        assert response.status_code == 429
        assert not is_signed_in(client)
        assert events("auth.login") == []

    def test_unknown_usernames_lock_too_with_the_same_words(self, client, alice, three_strikes):
        for _ in range(3):
            unknown = sign_in(client, "nobody", "wrong")
            known = sign_in(client, "alice", "wrong")
        assert unknown.status_code == known.status_code == 429
        assert _alert(unknown) == _alert(known)
        lockouts = events("auth.lockout")
        assert sorted(e.actor_name for e in lockouts) == ["alice", "nobody"]
        assert next(e for e in lockouts if e.actor_name == "nobody").actor_id is None

    def test_a_successful_sign_in_clears_the_count(self, client, alice, three_strikes):
        for _ in range(2):
            sign_in(client, "alice", "wrong")
        sign_in(client, "alice")
        client.logout()
        for _ in range(2):
            sign_in(client, "alice", "wrong")
        assert sign_in(client, "alice").status_code == 302


def _alert(response) -> str:
    html = response.content.decode()
    start = html.index('role="alert"')
    return html[start : html.index("</div>", start)]


class TestSecondFactor:
    def test_a_user_with_a_device_is_not_signed_in_by_the_password_alone(self, client, alice):
        device = totp_device_for(alice)
        response = sign_in(client, "alice", next="/tokens/")
        assert response["Location"] == VERIFY
        assert not is_signed_in(client)
        assert client.get(HOME)["Location"].startswith(LOGIN)

        page = client.get(VERIFY)
        assert page.status_code == 200
        assert 'autocomplete="one-time-code"' in page.content.decode()
        response = client.post(VERIFY, {"code": code_for(device)})
        assert response["Location"] == "/tokens/"
        assert is_signed_in(client)
        assert otp.PENDING_USER not in client.session
        assert events("auth.login")[-1].details == {"second_factor": True}

    def test_a_wrong_code_is_refused_and_counted(self, client, alice):
        device = totp_device_for(alice)
        sign_in(client, "alice")
        wrong = "000000" if code_for(device) != "000000" else "111111"
        response = client.post(VERIFY, {"code": wrong})
        assert response.status_code == 200
        assert "That code is not right." in response.content.decode()
        assert 'aria-describedby="id_code_error"' in response.content.decode()
        assert not is_signed_in(client)
        assert events("auth.login_failed")[-1].details["reason"] == "bad_totp"

    def test_failed_codes_count_toward_the_lockout(self, client, alice, three_strikes):
        totp_device_for(alice)
        sign_in(client, "alice", "wrong")
        sign_in(client, "alice")
        assert client.post(VERIFY, {"code": "000001"}).status_code == 200
        response = client.post(VERIFY, {"code": "000002"})
        assert response.status_code == 429
        assert "Too many failed sign-ins" in response.content.decode()
        # The half-signed-in state is gone: the password must be given again, and is refused.
        assert client.get(VERIFY)["Location"] == LOGIN
        assert sign_in(client, "alice").status_code == 429
        assert len(events("auth.lockout")) == 1

    def test_the_password_step_expires(self, client, alice):
        totp_device_for(alice)
        sign_in(client, "alice")
        session = client.session
        session[otp.PENDING_AT] = int(time.time()) - otp.PENDING_SECONDS - 1
        session.save()
        assert client.get(VERIFY)["Location"] == LOGIN

    def test_a_malformed_code_is_a_field_error_not_a_failure(self, client, alice):
        totp_device_for(alice)
        sign_in(client, "alice")
        response = client.post(VERIFY, {"code": "12ab"})
        assert "Enter the 6 digits" in response.content.decode()
        assert events("auth.login_failed") == []


class TestOperatorsMustUseTotp:
    def test_an_operator_with_the_right_password_and_no_code_is_not_signed_in(self, client, ops):
        totp_device_for(ops)
        response = sign_in(client, "ops")
        assert response["Location"] == VERIFY
        assert not is_signed_in(client)
        assert client.get(reverse("common:tokens"))["Location"].startswith(LOGIN)

    def test_an_operator_without_a_device_enrolls_then_signs_in_with_codes(self, client, ops):
        response = sign_in(client, "ops")
        assert response["Location"] == ENROLL
        assert not is_signed_in(client)

        page = client.get(ENROLL)
        html = page.content.decode()
        assert page.status_code == 200
        assert 'src="data:image/svg+xml' in html
        device = TOTPDevice.objects.get(user=ops, confirmed=False)
        assert otp.device_secret(device) in html
        assert "Operators must use two-factor sign-in" in html

        response = client.post(ENROLL, {"code": code_for(device)})
        assert response["Location"] == HOME
        device.refresh_from_db()
        assert device.confirmed
        assert client.get(HOME).status_code == 200
        (enrolled,) = events("auth.totp_enrolled")
        assert enrolled.actor_id == ops.pk
        assert events("auth.login")[-1].details == {"second_factor": True}

        client.post(reverse("common:logout"))
        assert sign_in(client, "ops")["Location"] == VERIFY
        assert client.post(VERIFY, {"code": code_for(device, steps_ahead=1)})["Location"] == HOME
        assert client.get(HOME).status_code == 200

    def test_a_wrong_enrollment_code_keeps_the_device_unconfirmed(self, client, ops):
        sign_in(client, "ops")
        client.get(ENROLL)
        device = TOTPDevice.objects.get(user=ops)
        wrong = "000000" if code_for(device) != "000000" else "111111"
        response = client.post(ENROLL, {"code": wrong})
        assert response.status_code == 200
        assert "That code is not right." in response.content.decode()
        device.refresh_from_db()
        assert not device.confirmed
        assert not is_signed_in(client)

    @pytest.mark.parametrize("has_device", [False, True])
    def test_pages_redirect_an_operator_whose_session_is_not_verified(self, client, ops, has_device):
        if has_device:
            totp_device_for(ops)
        client.force_login(ops)
        step = VERIFY if has_device else ENROLL
        for name in ("portal:home", "common:tokens", "common:account"):
            response = client.get(reverse(name))
            assert response.status_code == 302
            assert response["Location"].startswith(f"{step}?next=")

    def test_an_unverified_operator_session_verifies_in_place(self, client, ops):
        device = totp_device_for(ops)
        client.force_login(ops)
        response = client.post(f"{VERIFY}?next=/tokens/", {"code": code_for(device)})
        assert response["Location"] == "/tokens/"
        assert client.get(reverse("common:tokens")).status_code == 200

    def test_the_middleware_holds_back_every_view_of_the_project(self, client, ops, settings):
        settings.MIDDLEWARE = [*settings.MIDDLEWARE, "common.otp.OperatorOtpMiddleware"]
        client.force_login(ops)
        api = client.get("/api/v1/me")
        assert api.status_code == 401
        assert api.json()["code"] == "common.otp_required"
        assert client.get(HOME)["Location"].startswith(ENROLL)
        assert client.get(ENROLL).status_code == 200
        assert client.get("/healthz").status_code != 302

    def test_a_verified_operator_passes_the_middleware(self, client, ops, settings):
        settings.MIDDLEWARE = [*settings.MIDDLEWARE, "common.otp.OperatorOtpMiddleware"]
        login_with_otp(client, ops)
        assert client.get("/api/v1/me").status_code == 200
        assert client.get(HOME).status_code == 200


class TestSignOut:
    def test_is_post_only_and_audited(self, client, alice):
        client.force_login(alice)
        assert client.get(reverse("common:logout")).status_code == 405
        response = client.post(reverse("common:logout"))
        assert response["Location"] == LOGIN
        assert not is_signed_in(client)
        (logout,) = events("auth.logout")
        assert logout.actor_id == alice.pk

    def test_ends_the_verified_session_of_an_operator(self, client, ops):
        login_with_otp(client, ops)
        client.post(reverse("common:logout"))
        assert client.get(HOME)["Location"].startswith(LOGIN)


def test_an_inactive_user_cannot_sign_in(client, alice):
    User.objects.filter(pk=alice.pk).update(is_active=False)
    response = sign_in(client, "alice")
    assert response.status_code == 200
    assert not is_signed_in(client)
