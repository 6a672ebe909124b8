"""An operator must set up and then use a TOTP code; the QR code renders under CSP."""

from __future__ import annotations

import time
from base64 import b32decode

import pytest
from django_otp.oath import TOTP

from common.models import AuditEvent
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.browser


def code_from_secret(secret: str, steps_ahead: int = 0) -> str:
    """What an authenticator app shows for the secret the page printed."""
    key = b32decode(secret.replace(" ", "") + "=" * (-len(secret.replace(" ", "")) % 8))
    totp = TOTP(key)
    totp.time = time.time() + 30 * steps_ahead
    return f"{totp.token():06d}"


def sign_in(page, username: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Sign in").click()


def test_an_operator_enrolls_then_signs_in_with_a_code(page, shot, live_server, ops):
    sign_in(page, "ops")
    page.wait_for_url(f"{live_server.url}/login/two-factor/setup/")
    assert page.get_by_text("Operators must use two-factor sign-in").is_visible()
    qr = page.get_by_role("img", name="QR code for setting up the authenticator app")
    assert qr.evaluate("img => img.complete && img.naturalWidth > 0")
    secret = page.locator("#totp-secret").inner_text()
    shot("enrollment-qr-code")

    # Nothing else is reachable before the second factor.
    page.goto("/tokens/")
    assert page.url.startswith(f"{live_server.url}/login/")
    shot("tokens-page-sends-back-to-sign-in")

    sign_in(page, "ops")
    page.wait_for_url(f"{live_server.url}/login/two-factor/setup/")
    page.get_by_label("6-digit code").fill(code_from_secret(secret))
    page.get_by_role("button", name="Confirm and turn on").click()
    page.wait_for_url(f"{live_server.url}/")
    assert page.get_by_text("Two-factor sign-in is on.").is_visible()
    assert page.get_by_text("You are a platform operator.").is_visible()
    shot("signed-in-after-enrollment")
    assert AuditEvent.objects.filter(action="auth.totp_enrolled", actor_id=ops.pk).exists()

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, "ops")
    page.wait_for_url(f"{live_server.url}/login/verify/")
    page.get_by_label("6-digit code").fill("000000" if code_from_secret(secret, 1) != "000000" else "111111")
    page.get_by_role("button", name="Verify and sign in").click()
    assert page.get_by_text("That code is not right.").is_visible()
    shot("wrong-code")

    # django-otp slows guessing down after a failure; wait it out, then use the next code.
    time.sleep(1.1)
    page.get_by_label("6-digit code").fill(code_from_secret(secret, 1))
    page.get_by_role("button", name="Verify and sign in").click()
    page.wait_for_url(f"{live_server.url}/")
    shot("signed-in-with-code")
