"""A provider uploads a corpus in the browser, watches it process, reviews the report and seals.

No Celery worker runs here: the test drains the queued ingest work itself
(``tests.custody.conftest.drain``), in this process, on the database the live
server reads, and the page notices by itself (htmx polling).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from common import services
from common.models import Organisation, User, WorkItem, WorkState
from common.work import work_run
from custody import services as custody_services
from custody.models import Contribution, DatasetVersion, Finding, UploadPart, VersionState
from tests.custody.conftest import drain, jsonl

pytestmark = pytest.mark.browser

PASSWORD = "a long and quiet harbour"
PART_BYTES = 256
TICKETS = [
    {
        "text": f"Ticket {i}: please call Maria Lopez at maria.lopez{i}@example.com about floor {i % 7}.",
        "topic": "printers",
    }
    for i in range(12)
]
# Record 12 repeats record 0 exactly: screening flags it.
CORPUS = jsonl([*TICKETS, TICKETS[0]])


def provider(username: str = "petra") -> tuple[User, Organisation]:
    return services.organisation_signup(
        username=username,
        email=f"{username}@example.test",
        password=PASSWORD,
        organisation_name="Petra Corpora",
        is_provider=True,
        is_trainer=False,
    )


def sign_in(page, live_server, username: str = "petra") -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")


def small_parts(page, retries: int | None = None) -> None:
    """Make the widget cut the file into PART_BYTES parts (and retry a part ``retries`` times)."""
    script = f"f => {{ f.dataset.partSize = '{PART_BYTES}';"
    if retries is not None:
        script += f" f.dataset.retries = '{retries}';"
    page.locator("form[data-upload]").evaluate(script + " }")


def test_provider_uploads_watches_progress_reviews_and_seals(page, shot, live_server):
    provider()
    sign_in(page, live_server)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Datasets").click()
    page.wait_for_url(f"{live_server.url}/data/")
    assert page.get_by_text("Petra Corpora has no datasets yet.").is_visible()
    page.get_by_label("Name").fill("Support tickets")
    page.get_by_label("Description").fill("Help-desk tickets, 2024")
    page.get_by_label(re.compile("Pseudonyms:")).check()
    shot("create-dataset")
    page.get_by_role("button", name="Create dataset").click()
    page.get_by_role("heading", name="Support tickets").wait_for()
    assert page.get_by_text("No versions yet.").is_visible()
    shot("dataset-created")

    page.get_by_label("Privacy cap (epsilon)").fill("4")
    page.get_by_role("button", name="Open a new version").click()
    page.get_by_role("heading", name="Support tickets · version 1").wait_for()
    version = DatasetVersion.objects.get(dataset__name="Support tickets")
    assert str(version.epsilon_cap) == "4.000"

    small_parts(page)
    page.get_by_label("File", exact=True).set_input_files(
        files=[{"name": "tickets.jsonl", "mimeType": "application/x-ndjson", "buffer": CORPUS}]
    )
    assert page.get_by_text("Format: JSON Lines.").is_visible()
    page.get_by_label("Metadata fields").fill("topic")
    shot("file-chosen")
    page.get_by_role("button", name="Upload", exact=True).click()

    page.get_by_text("Uploaded tickets.jsonl.").wait_for()
    assert page.locator("#upload-progress").evaluate("p => p.value") == 100
    assert page.locator("[data-upload-percent]").inner_text() == "100%"
    uploads = page.get_by_role("table", name="Uploads")
    uploads.get_by_role("row", name=re.compile("tickets.jsonl")).get_by_text("Uploaded").wait_for()
    contribution = Contribution.objects.get(version=version)
    expected_parts = -(-len(CORPUS) // PART_BYTES)
    assert expected_parts >= 2
    assert UploadPart.objects.filter(contribution=contribution).count() == expected_parts
    assert contribution.metadata_fields == ["topic"]
    shot("uploaded-in-parts")

    page.get_by_role("button", name="Close uploads and process").click()
    page.get_by_text("Uploads are closed.").wait_for()
    assert page.locator(".lead .tag--state").inner_text() == "Processing"
    shot("processing")

    # Parse first: the page's poll (every 2 s, in place) shows how many records there are to do.
    parse = WorkItem.objects.get(kind="custody.parse", state=WorkState.QUEUED)
    work_run(item_id=parse.pk, owner="browser-test")
    page.get_by_text("0 of 13 processed").wait_for(timeout=10_000)
    assert page.get_by_text("Desensitizing, screening and encrypting").is_visible()
    shot("parsed-progress-live")

    assert drain() > 0
    # The status fragment polls every 2 s and reloads the page when the state moved on.
    page.get_by_text("Ready for review.").wait_for(timeout=15_000)
    assert page.locator("#ingest-progress").evaluate("p => p.value") == 13
    shot("ready-for-review")

    page.get_by_role("link", name="Review the report").click()
    page.get_by_role("heading", name="Desensitization report").wait_for()
    chart = page.locator('svg[data-chart="by-type"]')
    assert chart.is_visible()
    assert chart.locator("rect.chart__bar").count() >= 2
    assert chart.locator("text.chart__label", has_text="EMAIL_ADDRESS").count() == 1
    shot("report")

    page.get_by_role("link", name="Show before/after samples").click()
    sample = page.locator(".sample").first
    sample.wait_for()
    assert "@example.com" in sample.locator(".sample__text--before").inner_text()
    assert "@example.com" not in sample.locator(".sample__text--after").inner_text()
    assert page.url.endswith(f"/data/versions/{version.public_id}/report/")  # swapped in place by htmx
    shot("samples")

    duplicate = Finding.objects.get(version=version, kind="exact_duplicate")
    page.get_by_label(f"Drop record {duplicate.record_id} (exact_duplicate)").check()
    page.get_by_role("button", name="Save drop choices").click()
    page.get_by_text("Saved. 1 flagged record(s) will be dropped when you seal.").wait_for()
    assert page.get_by_label(f"Drop record {duplicate.record_id} (exact_duplicate)").is_checked()
    shot("duplicate-marked")

    page.get_by_role("link", name="Seal version 1…").click()
    page.get_by_role("heading", name="Seal version 1 of Support tickets?").wait_for()
    assert page.get_by_text("will be dropped, leaving 12 of the 13 records.").is_visible()
    shot("seal-confirmation")
    page.get_by_role("button", name="Seal version 1").click()

    page.get_by_role("heading", name="Sealed").wait_for()
    version.refresh_from_db()
    assert version.state == VersionState.SEALED
    assert version.records == 12
    assert page.locator("[data-merkle-root]").inner_text() == version.merkle_root
    assert len(version.merkle_root) == 64
    shot("sealed")


def test_an_interrupted_upload_resumes_with_the_parts_that_had_not_arrived(
    page, shot, live_server, console_messages, tmp_path: Path
):
    user, org = provider()
    dataset = custody_services.dataset_create(actor=user, organisation=org, name="Field notes")
    version = custody_services.version_create(actor=user, dataset=dataset)
    corpus = tmp_path / "notes.jsonl"
    corpus.write_bytes(CORPUS)
    parts = -(-len(CORPUS) // PART_BYTES)
    sign_in(page, live_server)
    page.goto(f"/data/versions/{version.public_id}/")

    # The connection drops whenever part 3 is sent.
    console_messages.allow(r"Failed to load resource|ERR_FAILED")
    page.route("**/parts/3", lambda route: route.abort())
    small_parts(page, retries=0)
    page.get_by_label("File", exact=True).set_input_files(str(corpus))
    page.get_by_role("button", name="Upload", exact=True).click()
    page.get_by_text("Upload paused: The connection to Sealroom was lost.").wait_for()
    assert page.get_by_role("button", name="Resume upload").is_visible()
    assert page.locator("#upload-progress").evaluate("p => p.value") < 100
    contribution = Contribution.objects.get(version=version)
    assert list(contribution.parts.values_list("number", flat=True).order_by("number")) == [1, 2]
    shot("paused")

    # Even after a reload, choosing the same file again asks which parts arrived and sends the rest.
    page.unroute("**/parts/3")
    page.reload()
    page.get_by_text("Incomplete: choose the same file again to resume.").wait_for()
    shot("reloaded-with-an-incomplete-upload")
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "PUT" else None)
    small_parts(page, retries=0)
    page.get_by_label("File", exact=True).set_input_files(str(corpus))
    page.get_by_role("button", name="Upload", exact=True).click()
    page.get_by_text("Uploaded notes.jsonl.").wait_for()
    shot("resumed-and-complete")

    assert sorted(int(u.rsplit("/", 1)[1]) for u in sent) == list(range(3, parts + 1))
    assert Contribution.objects.filter(version=version).count() == 1
    contribution.refresh_from_db()
    assert contribution.state == "uploaded"
    assert contribution.size_received == len(CORPUS)
