"""A provider, end to end in the browser: upload a corpus, watch it process, review, seal, then publish
a listing with an offer and a preview, and see it all on the dashboard.

No Celery worker runs here: the test drains the queued ingest work itself
(``tests.custody.conftest.drain``), on the database the live server reads;
the version page notices by itself (htmx polling).
"""

from __future__ import annotations

import pytest

from common import services
from common.models import AuditEvent, WorkItem, WorkState
from common.work import work_run
from custody.models import DatasetVersion, VersionState
from marketplace.models import Listing, ListingState, OfferTerms
from tests.custody.conftest import drain, jsonl

pytestmark = pytest.mark.browser

PASSWORD = "a long and quiet harbour"
TICKETS = [
    {
        "text": f"Ticket {i}: please call Maria Lopez at maria.lopez{i}@example.com about printer {i}.",
        "topic": "it",
    }
    for i in range(10)
]
CORPUS = jsonl(TICKETS)


def sign_in(page, live_server, username: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")


def nav(page, name: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True).click()


def test_provider_uploads_seals_and_publishes_a_listing_with_an_offer(page, shot, live_server):
    services.organisation_signup(
        username="petra",
        email="petra@example.test",
        password=PASSWORD,
        organisation_name="Petra Corpora",
        is_provider=True,
        is_trainer=False,
    )
    sign_in(page, live_server, "petra")
    assert page.get_by_role("heading", name="Data in custody").is_visible()
    assert page.get_by_text("0 datasets.").is_visible()
    shot("dashboard-empty")

    # Dataset, version, upload.
    nav(page, "Datasets")
    page.get_by_label("Name").fill("Support tickets")
    page.get_by_role("button", name="Create dataset").click()
    page.get_by_role("button", name="Open a new version").click()
    page.get_by_role("heading", name="Support tickets · version 1").wait_for()
    version = DatasetVersion.objects.get(dataset__name="Support tickets")
    page.get_by_label("File", exact=True).set_input_files(
        files=[{"name": "tickets.jsonl", "mimeType": "application/x-ndjson", "buffer": CORPUS}]
    )
    page.get_by_label("Metadata fields").fill("topic")
    page.get_by_role("button", name="Upload", exact=True).click()
    page.get_by_text("Uploaded tickets.jsonl.").wait_for()
    assert page.locator("#upload-progress").evaluate("p => p.value") == 100
    shot("uploaded")

    # Process, watching the progress the page polls for.
    page.get_by_role("button", name="Close uploads and process").click()
    page.get_by_text("Uploads are closed.").wait_for()
    parse = WorkItem.objects.get(kind="custody.parse", state=WorkState.QUEUED)
    work_run(item_id=parse.pk, owner="browser-flow")
    page.get_by_text("0 of 10 processed").wait_for(timeout=10_000)
    shot("processing-progress")
    assert drain() > 0
    page.get_by_text("Ready for review.").wait_for(timeout=15_000)
    assert page.locator("#ingest-progress").evaluate("p => p.value") == 10
    shot("ready-for-review")

    # Review the report, then seal.
    page.get_by_role("link", name="Review the report").click()
    page.get_by_role("heading", name="Desensitization report").wait_for()
    chart = page.locator('svg[data-chart="by-type"]')
    assert chart.locator("text.chart__label", has_text="EMAIL_ADDRESS").count() == 1
    shot("report")
    page.get_by_role("link", name="Seal version 1…").click()
    page.get_by_role("button", name="Seal version 1").click()
    page.get_by_role("heading", name="Sealed").wait_for()
    version.refresh_from_db()
    assert version.state == VersionState.SEALED
    shot("sealed")

    # The dashboard counts the sealed version.
    nav(page, "Dashboard")
    assert page.locator('[data-state="sealed"]').inner_text() == "Sealed 1"
    assert page.get_by_text("No licensee has run a job on your data yet.").is_visible()

    # Draft a listing of the sealed version.
    nav(page, "Listings")
    page.get_by_label("Sealed version").select_option(label="Support tickets · version 1")
    page.get_by_label("Title").fill("Help-desk tickets 2024")
    page.get_by_label("Description").fill("Ten desensitized IT help-desk tickets.")
    shot("listing-form")
    page.get_by_role("button", name="Draft the listing").click()
    page.get_by_text("Listing drafted.").wait_for()
    listing = Listing.objects.get(title="Help-desk tickets 2024")
    assert listing.state == ListingState.DRAFT

    # An offer: research, LoRA, fixed price; see it in plain words before saving.
    page.get_by_role("link", name="Add an offer").click()
    page.get_by_role("heading", name="New offer").wait_for()
    page.get_by_label("Name").fill("Research, 3 jobs")
    page.get_by_label("Non-commercial research").check()
    page.get_by_label("LoRA fine-tuning of a causal language model").check()
    page.get_by_label("Trained weights may be downloaded").check()
    page.get_by_label("Fixed per license").check()
    # Prices are typed in major units of the listing's currency (250.00 EUR = 25,000 cents).
    page.get_by_label("Price (EUR)").fill("250.00")
    page.get_by_role("button", name="Show in plain words").click()
    page.get_by_role("heading", name="In plain words").wait_for()
    assert page.get_by_text("non-commercial research", exact=False).first.is_visible()
    shot("offer-in-plain-words")
    page.get_by_role("button", name="Save the offer").click()
    page.get_by_text("Offer saved: new orders get these terms.").wait_for()
    terms = OfferTerms.objects.get(offer__listing=listing)
    assert (terms.price_model, terms.unit_price) == ("fixed", 25_000)
    page.get_by_text("Fixed per license: €250.00").wait_for()
    shot("offer-saved")

    # A preview of two desensitized records, approved.
    page.get_by_role("link", name="Pick the preview").click()
    page.get_by_role("heading", name="Preview", exact=True).wait_for()
    boxes = page.locator('input[name="record_ids"]')
    assert boxes.count() >= 2
    assert "@example.com" not in page.locator(".samples").inner_text()
    boxes.nth(0).check()
    boxes.nth(1).check()
    page.get_by_role("button", name="Use the checked records").click()
    page.get_by_text("Preview picked.").wait_for()
    page.get_by_role("button", name="Approve this preview").click()
    page.get_by_text("Preview approved: trainers see these records").wait_for()
    shot("preview-approved")

    # Publish, and find it in the catalog.
    page.get_by_role("link", name="Help-desk tickets 2024").click()
    page.get_by_role("button", name="Publish").click()
    page.get_by_text("Published: trainers can find it in the catalog.").wait_for()
    listing.refresh_from_db()
    assert listing.state == ListingState.PUBLISHED
    shot("published")
    nav(page, "Catalog")
    page.get_by_role("link", name="Help-desk tickets 2024").wait_for()
    shot("in-the-catalog")

    nav(page, "Dashboard")
    assert page.locator('[data-listings="published"]').inner_text() == "Published 1"
    shot("dashboard-after-publishing")
    assert AuditEvent.objects.filter(action__startswith="marketplace.listing_publish").exists()
