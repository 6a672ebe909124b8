"""A trainer buys a license the way a person would: find the listing, read the terms recap, try to
order without accepting (refused), accept, order; coming back, the page warns the offer is held.

The listing is made through the services (rows of a sealed version, no ingest). Any console error
or CSP violation on a visited page fails the test (tests/plugins/browser.py).
"""

from __future__ import annotations

import re

import pytest

from marketplace.models import License, Order
from tests.factories import DEFAULT_PASSWORD
from tests.marketplace.catalog.conftest import sealed_rows  # noqa: F401
from tests.marketplace.orders.conftest import cora, fund, market  # noqa: F401

pytestmark = pytest.mark.browser


def sign_in(page, live_server, username: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")


def test_a_trainer_reads_the_terms_accepts_them_and_orders(
    page,
    shot,
    live_server,
    market,  # noqa: F811
    fund,  # noqa: F811
    bolt,
    bob,
):
    offer = market("fixed")
    fund(bolt, 100_000)
    sign_in(page, live_server, "bob")

    # Find the listing in the catalog.
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Catalog", exact=True).click()
    page.get_by_label("Search").fill(offer.listing.title)
    page.get_by_role("button", name=re.compile("^Search")).click()
    page.get_by_role("link", name=offer.listing.title).click()
    page.get_by_role("heading", name=offer.listing.title).wait_for()

    # The buy page recaps the terms and the price before anything is charged.
    page.get_by_role("link", name="Buy a license").click()
    page.get_by_role("heading", name=f"Buy “{offer.name}”").wait_for()
    recap = page.locator("[data-terms-recap]")
    for fact in ("Purposes", "Trained weights", "Differential privacy", "Attribution", "Exclusivity"):
        assert recap.get_by_text(fact, exact=True).is_visible(), fact
    assert page.locator("[data-escrow]").inner_text().startswith("€500.00")
    assert page.get_by_label("Periods").count() == 0  # a fixed price needs no usage input
    shot("terms-recap")

    # Ordering without accepting is refused, and says why.
    page.get_by_role("button", name="Place order").click()
    page.get_by_text("Accept the terms to place the order.").wait_for()
    assert not Order.objects.exists()
    shot("acceptance-required")

    # Accept and order.
    page.get_by_label("I have read these terms and accept them").check()
    page.get_by_role("button", name="Place order").click()
    page.get_by_text(re.compile(r"Order \S+ placed")).wait_for()
    order = Order.objects.get()
    assert order.terms_accepted_at is not None
    license_ = License.objects.get(order=order)
    assert page.locator(f'[data-license="{license_.ref}"]').is_visible()
    shot("ordered")

    # Coming back to the offer warns that Bolt already holds it, and asks to confirm a second license.
    page.goto(f"/market/catalog/offers/{offer.public_id}/buy/")
    warning = page.locator("[data-already-held]")
    warning.wait_for()
    assert license_.ref in warning.inner_text()
    page.get_by_label("I have read these terms and accept them").check()
    page.get_by_role("button", name="Place order").click()
    page.get_by_text("You already hold this offer: confirm that you want another license.").wait_for()
    assert Order.objects.count() == 1
    shot("already-held")
