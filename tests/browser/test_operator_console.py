"""An operator in the console, as a person would: sign in with a TOTP code, record a top-up by choosing
the organisation by name from the console's navigation, then take a dataset version down.

Any console error or CSP violation on a visited page fails the test (tests/plugins/browser.py).
"""

from __future__ import annotations

import re

import pytest
from django_otp.oath import TOTP

from custody.models import VersionState
from marketplace.models import TopUp
from tests.factories import DEFAULT_PASSWORD
from tests.helpers import totp_device_for
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401

pytestmark = pytest.mark.browser


def sign_in_with_code(page, live_server, user) -> None:
    device = totp_device_for(user)
    page.goto("/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/login/verify/")
    code = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).token()
    page.get_by_label("6-digit code").fill(f"{code:0{device.digits}d}")
    page.get_by_role("button", name="Verify and sign in").click()
    page.wait_for_url(f"{live_server.url}/")


def console_nav(page, name: str) -> None:
    page.get_by_role("navigation", name="Console").get_by_role("link", name=name, exact=True).click()


def test_an_operator_tops_up_by_name_and_takes_a_version_down(
    page,
    shot,
    console_messages,
    live_server,
    ops,
    bolt,
    sealed_rows,  # noqa: F811
):
    version = sealed_rows()
    sign_in_with_code(page, live_server, ops)
    page.goto("/console/")

    # Top-ups are in the console's navigation; the organisation is chosen by its name.
    console_nav(page, "Top-ups")
    page.get_by_role("heading", name="Top-ups", exact=True).wait_for()
    page.get_by_label("Organisation").select_option(label="Bolt Models (trainer)")
    page.get_by_label("Amount").fill("250.00")
    page.get_by_label("Transfer reference").fill("bank-42")
    shot("top-up-form")
    page.get_by_role("button", name="Record top-up").click()
    page.get_by_text(re.compile(r"Top-up \S+ recorded for Bolt Models")).wait_for()
    topup = TopUp.objects.get()
    assert (topup.organisation_id, topup.amount, topup.currency) == (bolt.pk, 25_000, "EUR")
    assert page.get_by_role("row", name=re.compile("bank-42")).get_by_text("€250.00").is_visible()
    shot("top-up-recorded")

    # Take the version down: chosen by its label, with a reason and an explicit confirmation.
    console_nav(page, "Takedowns")
    page.get_by_role("heading", name="Takedowns", exact=True).wait_for()
    page.get_by_label("Dataset version").select_option(
        label=f"Acme Corpora / {version.dataset.name} / v1 (sealed)"
    )
    page.get_by_label("Reason").fill("court order")
    # The refused form answers 422, which Chromium logs; that one error is expected.
    console_messages.allow(r"status of 422 \(Unprocessable Entity\)")
    page.get_by_role("button", name="Take it down").click()
    page.get_by_text("Confirm that you mean to take the version down.").wait_for()
    version.refresh_from_db()
    assert version.state == VersionState.SEALED
    page.get_by_label("Reason").fill("court order")
    page.get_by_label("Withdraw its listings, revoke its licenses and refund what is unreleased").check()
    page.get_by_role("button", name="Take it down").click()
    page.get_by_text(re.compile("is taken down")).wait_for()
    version.refresh_from_db()
    assert (version.state, version.failure_reason) == (VersionState.TAKEN_DOWN, "court order")
    row = page.locator(f'tr[data-version="{version.pk}"]')
    assert "court order" in row.inner_text() and "operator" in row.inner_text()
    shot("taken-down")
