"""A trainer, end to end in the browser: find a listing in the catalog, get a quote, buy it, submit a
job, watch it finish, download the model and its receipt, and verify the receipt. Then the provider
finds the job in its data access log and exports it.

The provider's side is made through the services (a real ingest and seal, a
published listing). No Celery worker runs: the test drains the queued work
itself, in this process, on the database the live server reads, so the runner
really trains gpt2-tiny in the sandbox; the job page notices by itself (htmx
polling).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import tarfile
from pathlib import Path

import pytest

from common.signing import signing_key_provider
from custody.models import UsageRecord
from marketplace.models import License, Listing
from marketplace.services import catalog
from marketplace.services.funding import topup_record
from tests.custody.conftest import dataset, drain, sealed_version, upload, version  # noqa: F401
from tests.factories import DEFAULT_PASSWORD
from tests.marketplace.catalog.conftest import terms_doc
from training import tasks  # noqa: F401  (registers the training work handlers for drain())
from training.models import BaseModel, JobState, TrainingJob
from training.receipts import receipt_problems, receipt_sha256

pytestmark = pytest.mark.browser


@pytest.fixture(autouse=True)
def _work_dir(settings, tmp_path: Path) -> Path:
    settings.TRAINING_WORK_DIR = tmp_path / "training-work"
    settings.TRAINING_WALL_SECONDS = 300
    settings.TRAINING_MEMORY_BYTES = 4 * 1024**3
    settings.TRAINING_CANARY_CANDIDATES = 31
    return settings.TRAINING_WORK_DIR


@pytest.fixture
def published(alice, sealed_version) -> Listing:  # noqa: F811
    listing = catalog.listing_create(
        actor=alice, version=sealed_version, title="Help-desk tickets 2024", domain_tags=["support"]
    )
    doc = terms_doc(
        duty={"attribution": "Acme support tickets", "release_gate": {"max_exposure": 20.0}},
    )
    doc["permission"]["job_templates"] = ["causal_lm", "causal_lm_lora"]
    catalog.offer_create(
        actor=alice,
        listing=listing,
        name="Research, 3 jobs",
        terms=doc,
        price={"model": "fixed", "unit_price": "250.00"},
    )
    return catalog.listing_publish(actor=alice, listing=listing)


def sign_in(page, live_server, username: str) -> None:
    page.goto("/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")


def nav(page, name: str) -> None:
    page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True).click()


def test_trainer_buys_trains_downloads_and_verifies_the_receipt(
    page,
    shot,
    live_server,
    published,
    bob,
    bolt,
    ops,
    sealed_version,  # noqa: F811
):
    tiny = BaseModel.objects.get(name="gpt2-tiny", owner=None)
    topup_record(organisation=bolt, amount=100_000, currency="EUR", external_ref="bank-1", actor=ops)
    sign_in(page, live_server, "bob")
    assert page.get_by_role("heading", name="Training jobs").is_visible()
    shot("dashboard")

    # Find the listing in the catalog and get a quote.
    nav(page, "Catalog")
    page.get_by_label("Search").fill("help-desk")
    page.get_by_role("button", name=re.compile("^Search")).click()
    page.get_by_role("link", name="Help-desk tickets 2024").click()
    page.get_by_role("heading", name="Help-desk tickets 2024").wait_for()
    page.get_by_role("button", name="Get a quote").click()
    quote = page.locator(f"#quote-{published.offers.get().public_id}")
    quote.locator("strong", has_text=re.compile(r"^€250\.00$")).wait_for()
    shot("quoted")

    # Buy the offer from the listing page.
    offer = published.offers.get()
    page.get_by_role("link", name="Buy a license").click()
    page.get_by_role("heading", name=f"Buy “{offer.name}”").wait_for()
    assert page.locator("[data-escrow]").inner_text().startswith("€250.00")
    shot("buy")
    page.get_by_label("I have read these terms and accept them").check()
    page.get_by_role("button", name="Place order").click()
    page.get_by_text(re.compile(r"Order \S+ placed")).wait_for()
    license_ = License.objects.select_related("grant").get(licensee=bolt)
    shot("ordered")

    # Submit a job under the new license.
    nav(page, "Jobs")
    page.get_by_role("link", name="New job").click()
    page.get_by_label("License", exact=True).select_option(value=license_.grant.public_id)
    page.get_by_label("Template", exact=True).select_option(value="causal_lm")
    page.get_by_label("Base model", exact=True).select_option(value=tiny.public_id)
    page.get_by_label("Epochs", exact=True).fill("1")
    page.get_by_label("Batch size").fill("4")
    page.get_by_label("Maximum sequence length").fill("32")
    page.get_by_label("Learning rate").fill("0.001")
    page.get_by_label("Seed", exact=True).fill("3")
    shot("job-form")
    page.get_by_role("button", name="Submit job").click()
    page.wait_for_url(re.compile(r".*/training/jobs/job_[0-9a-f]{16}/$"))
    job = TrainingJob.objects.get(organisation=bolt)
    assert job.state == JobState.QUEUED
    shot("job-queued")

    # Run it (in this process) and watch the page pick the result up by itself.
    drain()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
    page.get_by_role("heading", name="Result").wait_for(timeout=20_000)
    shot("job-succeeded")

    # Download the model and the signed receipt.
    with page.expect_download() as model_download:
        page.get_by_role("link", name=re.compile("^Download the model")).click()
    with tarfile.open(model_download.value.path(), mode="r:gz") as tar:
        contents = {
            Path(m.name).name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }
    # The model card is written after the receipt is signed (it names the receipt's hash), so the
    # receipt lists every other file.
    card = contents.pop("README.md").decode()
    files = {name: hashlib.sha256(data).hexdigest() for name, data in contents.items()}
    with page.expect_download() as receipt_download:
        page.get_by_role("link", name="Signed receipt (JSON)").click()
    document = json.loads(Path(receipt_download.value.path()).read_text())

    # Verify the receipt against the platform's published keys, and the model against the receipt.
    published_keys = page.request.get("/api/v1/audit/keys").json()["keys"]
    trusted = {k["key_id"]: k["public_key_pem"] for k in published_keys}
    assert trusted == signing_key_provider().public_keys()
    assert receipt_problems(document, public_keys=trusted) == []
    receipt = document["receipt"]
    assert receipt["job"] == job.public_id and receipt["merkle_root"] == sealed_version.merkle_root
    assert receipt["weights_left_custody"] is True
    assert {f["name"]: f["sha256"] for f in receipt["artifact_files"]} == files
    assert receipt_sha256(document) in card
    tampered = {**document, "receipt": {**receipt, "platform_tokens_trained": 1}}
    assert receipt_problems(tampered, public_keys=trusted) != []
    usage = dict(UsageRecord.objects.filter(grant=license_.grant).values_list("kind", "quantity"))
    assert usage == {"job_started": 1, "tokens_trained": receipt["platform_tokens_trained"]}

    # The dashboard shows the finished job.
    nav(page, "Dashboard")
    assert page.locator('[data-state="succeeded"]').first.inner_text().startswith("Succeeded")
    assert page.locator('[data-licenses-active="1"]').is_visible()
    shot("dashboard-after")

    # The provider sees who trained on its version, how much, under which license; and exports it.
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, live_server, "alice")
    page.get_by_role("link", name="Data access log").click()
    row = page.get_by_role("row", name=re.compile("Bolt Models"))
    assert license_.ref in row.inner_text()
    tokens = row.locator("[data-tokens]")
    assert tokens.inner_text().splitlines()[0] == str(receipt["platform_tokens_trained"])
    # Under it, what the job read from each contribution (one here, the whole of it).
    reads = tokens.locator("[data-reads] li").all_inner_texts()
    assert reads == [f"Acme Corpora: {receipt['platform_tokens_trained']}"]
    shot("provider-access-log")
    with page.expect_download() as export:
        page.get_by_role("link", name="Export as CSV").click()
    with open(export.value.path(), encoding="utf-8") as handle:
        (exported,) = list(csv.DictReader(handle))
    assert (exported["licensee"], exported["license"], exported["consumer_ref"]) == (
        "Bolt Models",
        license_.ref,
        job.consumer_ref,
    )
    assert exported["tokens_trained"] == str(receipt["platform_tokens_trained"])
    assert exported["stream_opens"] == "1"
