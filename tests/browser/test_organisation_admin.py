"""An admin manages members in the browser; a locked-out sign-in says until when."""

from __future__ import annotations

import re

import pytest

from common.models import Invitation, Membership
from tests.factories import DEFAULT_PASSWORD

pytestmark = pytest.mark.browser


def sign_in(page, username: str, password: str = DEFAULT_PASSWORD) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_an_admin_invites_and_changes_a_role(page, shot, live_server, alice, acme_member, acme):
    sign_in(page, "alice")
    page.wait_for_url(f"{live_server.url}/")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Organisation").click()
    assert page.get_by_role("heading", name="Acme Corpora").is_visible()
    shot("organisation-page")

    page.get_by_label("E-mail").fill("mike@example.test")
    page.get_by_role("button", name="Send invitation").click()
    assert page.get_by_text("That person is already a member.").is_visible()
    email = page.get_by_label("E-mail")
    assert email.get_attribute("aria-invalid") == "true"
    assert email.input_value() == "mike@example.test"
    shot("invitation-error-beside-the-field")

    email.fill("nina@example.test")
    page.get_by_label("Role", exact=True).select_option("viewer")
    page.get_by_role("button", name="Send invitation").click()
    assert page.get_by_text("Invitation sent to nina@example.test.").is_visible()
    assert Invitation.objects.get(email="nina@example.test").role == "viewer"
    shot("invitation-sent")

    page.get_by_label("Role of mike").select_option("viewer")
    page.get_by_role("row", name=re.compile("mike")).get_by_role("button", name="Change role").click()
    assert page.get_by_text("mike is now viewer.").is_visible()
    assert Membership.objects.get(user=acme_member).role == "viewer"
    shot("role-changed")


def test_a_locked_sign_in_says_until_when(page, shot, live_server, alice, settings, console_messages):
    settings.LOCKOUT_FAILURES = 2
    console_messages.allow(r"status of 429")
    sign_in(page, "alice", "wrong")
    assert page.get_by_text("The username or password is not right.").is_visible()
    shot("wrong-password")
    sign_in(page, "alice", "wrong")
    assert page.get_by_text(re.compile(r"paused until \d\d:\d\d UTC")).is_visible()
    sign_in(page, "alice")
    assert page.get_by_text(re.compile(r"paused until \d\d:\d\d UTC")).is_visible()
    assert page.url == f"{live_server.url}/login/"
    shot("locked-out")
