"""The README's pictures: the provider dashboard and the audit console, on the seeded demo data.

Each run checks that the pages show the demo's real rows and saves the two
screenshots (1280 pixels wide) under ``var/test-output/readme/``. With
``SEALROOM_README_SCREENSHOTS=1`` it writes them to ``docs/screenshots/``
instead, where the README shows them; otherwise a browser run would leave
the working tree changed every time.
"""

from __future__ import annotations

import os
import re
import struct
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command

from common.demo import DEMO_PASSWORD
from common.models import AuditEvent
from custody.demo import DATASET_NAME
from marketplace.models import Listing, Order

WIDTH = 1280
DOCS = Path(settings.BASE_DIR) / "docs" / "screenshots"
SCRATCH = Path(settings.BASE_DIR) / "var" / "test-output" / "readme"
NAMES = ("provider-dashboard.png", "audit-console.png")


def screenshot_dir() -> Path:
    target = DOCS if os.environ.get("SEALROOM_README_SCREENSHOTS") == "1" else SCRATCH
    target.mkdir(parents=True, exist_ok=True)
    return target


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's header (the IHDR chunk comes first)."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return int(width), int(height)


def sign_in(page: Any, live_server: Any, username: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")


def sign_out(page: Any) -> None:
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Sign in").wait_for()


@pytest.fixture
def demo(transactional_db: None) -> None:
    """The same demo data ``make run`` seeds (the custody pipeline runs in this process)."""
    call_command("demo_seed", "--quiet-logins", stdout=StringIO())


@pytest.mark.browser
def test_readme_screenshots_show_the_seeded_demo(page: Any, live_server: Any, demo: None) -> None:
    out = screenshot_dir()
    listing = Listing.objects.get()
    order = Order.objects.get()

    sign_in(page, live_server, "alice")
    page.get_by_role("heading", name="Data in custody").wait_for()
    sales = page.locator("section", has=page.get_by_role("heading", name="Listings and sales"))
    assert sales.get_by_role("rowheader", name=order.ref).is_visible()
    assert sales.get_by_role("cell", name=listing.title).first.is_visible()
    trained = page.locator("section", has=page.get_by_role("heading", name="Who trained on your data"))
    assert trained.get_by_text(f"{DATASET_NAME} · version 1").first.is_visible()
    assert trained.get_by_text("Bolt Models").first.is_visible()
    page.screenshot(path=str(out / "provider-dashboard.png"), full_page=True)
    sign_out(page)

    sign_in(page, live_server, "audrey")
    page.goto("/console/audit/")
    # What custody did with the demo data: uploads, decrypts under grants, the seal, the stream opens.
    page.get_by_label("Action").fill("custody.")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*action=custody\..*"))
    custody_events = list(AuditEvent.objects.filter(action__startswith="custody.").order_by("-seq"))
    assert len(custody_events) >= 10
    rows = page.get_by_role("table", name="Events").locator("tbody tr")
    assert rows.count() == len(custody_events)
    for row, event in zip(rows.all(), custody_events, strict=True):
        assert row.locator("th, td").first.inner_text().strip() == str(event.seq)
        assert event.action in row.inner_text()
    page.screenshot(path=str(out / "audit-console.png"), full_page=True)

    for name in NAMES:
        width, height = png_size(out / name)
        assert width == WIDTH and height >= 800, (name, width, height)


def test_the_readme_shows_both_committed_screenshots() -> None:
    readme = (Path(settings.BASE_DIR) / "README.md").read_text()
    for name in NAMES:
        assert f"](docs/screenshots/{name})" in readme
        assert png_size(DOCS / name)[0] == WIDTH
