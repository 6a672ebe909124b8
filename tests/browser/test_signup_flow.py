"""A newcomer signs up, signs out and in, and makes an API token that really works."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import pytest

from common.models import ApiToken, Organisation, User

pytestmark = pytest.mark.browser

PASSWORD = "a long and quiet harbour"


def test_sign_up_sign_in_and_use_a_new_api_token(page, shot, live_server):
    page.goto("/signup/")
    assert page.title() == "Create an account · Sealroom"
    shot("sign-up-form")

    page.get_by_label("Username").fill("petra")
    page.get_by_label("E-mail").fill("petra@example.test")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password again").fill(PASSWORD)
    page.get_by_label("Organisation name").fill("Petra Corpora")
    page.get_by_label("Data provider").check()
    shot("sign-up-filled")
    page.get_by_role("button", name="Create account").click()

    page.wait_for_url(f"{live_server.url}/")
    assert page.get_by_role("heading", name="Welcome, petra").is_visible()
    assert page.get_by_role("row", name=re.compile("Petra Corpora")).is_visible()
    org = Organisation.objects.get(name="Petra Corpora")
    assert (org.is_provider, org.is_trainer) == (True, False)
    shot("dashboard-after-sign-up")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(f"{live_server.url}/login/")
    assert page.get_by_text("You are signed out.").is_visible()
    shot("signed-out")

    page.get_by_label("Username").fill("petra")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")
    shot("signed-in")

    page.get_by_role("navigation", name="Main").get_by_role("link", name="API tokens").click()
    page.wait_for_url(f"{live_server.url}/tokens/")
    assert page.get_by_text("You have no API tokens yet.").is_visible()
    page.get_by_label("Name").fill("laptop script")
    page.get_by_label("read — see what your role can see").check()
    shot("token-form")
    page.get_by_role("button", name="Create token").click()

    secret = page.get_by_label("Your new API token").input_value()
    assert secret.startswith("srk_")
    assert page.get_by_text("This is the only time Sealroom shows it").is_visible()
    shot("token-secret-shown-once")

    page.get_by_role("link", name="Done, back to my tokens").click()
    page.wait_for_url(f"{live_server.url}/tokens/")
    token = ApiToken.objects.get(user__username="petra")
    assert page.get_by_role("row", name=re.compile("laptop script")).is_visible()
    assert token.prefix in page.content()
    assert secret not in page.content()
    shot("token-listed-without-secret")

    request = urllib.request.Request(  # noqa: S310 - http to the live test server
        f"{live_server.url}/api/v1/me", headers={"Authorization": f"Bearer {secret}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - the live test server
        assert response.status == 200
        me = json.load(response)
    assert me["username"] == "petra"
    assert me["token_scopes"] == ["read"]
    assert me["memberships"][0]["organisation"]["name"] == "Petra Corpora"
    assert User.objects.get(username="petra").api_tokens.count() == 1

    # Revoking goes through htmx (the row is swapped in place), and the API then refuses the token.
    row = page.get_by_role("row", name=re.compile("laptop script"))
    row.get_by_role("button", name="Revoke laptop script").click()
    row = page.get_by_role("row", name=re.compile("laptop script"))
    row.get_by_text("Revoked").wait_for()
    assert page.url == f"{live_server.url}/tokens/"
    assert page.get_by_text("is revoked.").count() == 0  # no page load, so no flash message
    shot("token-revoked-in-place")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)  # noqa: S310 - the live test server
    assert refused.value.code == 401
