"""A new provider, in the browser: values its sealed version, opens its listing draft and reads
the price suggestion; every figure on the card is checked against the data it comes from.

The valuation is real (the owner's valuation job through the launcher and the sandboxed MiniLM
runner, drained in the test process as the provider journey drains ingest). The market rate comes
from one other published listing: Acme's, with a metered offer and a valuation summary recorded as
the launcher records one (custody's ``valuation_summary_record``).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from common import services as common_services
from common.models import Membership, User
from common.money import format_money
from custody import services as custody
from custody.models import ValuationSummary
from custody.services.valuation_summary import valuation_summary_record
from marketplace.services import catalog
from marketplace.services.price_suggestion import price_suggestion
from tests.custody.conftest import drain, jsonl
from tests.marketplace.catalog.conftest import sealed_rows, terms_doc  # noqa: F401
from training import tasks  # noqa: F401  (registers the launcher's work handler for drain())
from training.models import JobState, TrainingJob
from training.services.valuation import ValuationRequest, valuation_submit_own

pytestmark = pytest.mark.browser

PASSWORD = "a long and quiet harbour"
TOPICS = {
    "weather": "rain and wind are expected over the hills tonight, report {i}",
    "cooking": "simmer the onions in butter before adding the rice, recipe {i}",
}


@pytest.fixture(autouse=True)
def _work_dir(settings, tmp_path: Path) -> None:
    settings.TRAINING_WORK_DIR = tmp_path / "training-work"
    settings.TRAINING_WALL_SECONDS = 300
    settings.TRAINING_MEMORY_BYTES = 4 * 1024**3


def test_a_new_provider_reads_the_price_suggestion_on_its_listing_draft(
    page,
    shot,
    live_server,
    alice,
    acme,
    sealed_rows,  # noqa: F811
):
    common_services.organisation_signup(
        username="petra",
        email="petra@example.test",
        password=PASSWORD,
        organisation_name="Petra Texts",
        is_provider=True,
        is_trainer=False,
    )
    petra = User.objects.get(username="petra")
    org = Membership.objects.get(user=petra).organisation
    dataset = custody.dataset_create(actor=petra, organisation=org, name="Weather and cooking")
    version = custody.version_create(actor=petra, dataset=dataset)
    rows = [
        {"text": TOPICS[("weather", "cooking")[i % 2]].format(i=i), "kind": ("weather", "cooking")[i % 2]}
        for i in range(60)
    ]
    contribution = custody.contribution_start(
        actor=petra, organisation=org, version=version, filename="notes.jsonl", metadata_fields=["kind"]
    )
    custody.contribution_part_put(contribution=contribution, number=1, data=jsonl(rows))
    custody.contribution_complete(actor=petra, contribution=contribution)
    custody.version_process(actor=petra, version=version)
    drain()
    version = custody.version_seal(actor=petra, version=version)
    job = valuation_submit_own(
        actor=petra,
        organisation=org,
        version=version,
        request=ValuationRequest(
            label_field="kind",
            hyperparameters={"batch_size": 16, "max_seq_len": 32, "seed": 3},
            valuation={"k": 3, "min_group": 10, "holdout_fraction": 0.25},
        ),
    )
    drain()
    job = TrainingJob.objects.get(pk=job.pk)
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
    summary = ValuationSummary.objects.get(job_ref=job.public_id)

    # The market: Acme's published listing, metered at 40.00 per million tokens, valued.
    other = sealed_rows(tokens={acme: 4_000})
    listing = catalog.listing_create(actor=alice, version=other, title="Acme tickets")
    catalog.offer_create(
        actor=alice,
        listing=listing,
        name="Metered",
        terms=terms_doc(),
        price={"model": "metered", "unit_price": "40.00"},
    )
    catalog.listing_publish(actor=alice, listing=listing)
    valuation_summary_record(
        version=other,
        job_ref="job_00000000000000aa",
        published={"groups": {}, "summary": {"count": 40, "sum": 8.0, "mean": 0.2}, "min_group": 10},
    )
    draft = catalog.listing_create(actor=petra, version=version, title="Weather and cooking notes")
    expected = price_suggestion(listing=draft)
    assert expected.suggested_price is not None and expected.value_per_million is not None

    page.goto("/login/")
    page.get_by_label("Username").fill("petra")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_server.url}/")
    page.get_by_role("link", name="Listings", exact=True).click()
    page.get_by_role("link", name="Weather and cooking notes").click()
    card = page.locator("#price-suggestion")
    card.get_by_role("heading", name="Price suggestion from the valuation").wait_for()
    card.scroll_into_view_if_needed()
    shot("price-suggestion")
    text = card.inner_text()

    def fact(name: str) -> str:
        return str(card.locator(f'dt:text-is("{name}") + dd').inner_text())

    # 8.0 value over 4,000 tokens: 2,000 per million, priced 4,000 minor units: a rate of 2 minor
    # units per unit of value, i.e. EUR 20.00 per 1,000.
    assert expected.rate == Decimal(2)
    price = expected.suggested_price
    assert price == round(2 * expected.value_per_million)
    assert f"Suggested metered price: {format_money(price, 'EUR')} per million platform tokens." in text
    assert fact("Value per million tokens") == f"{expected.value_per_million:,.2f}"
    counts = summary.summary
    assert fact("Records valued") == (
        f"{counts['count']:,}, against {counts['validation_records']:,} validation records; the version "
        f"holds {summary.tokens:,} platform tokens (aggregates over groups of at least 10 records)"
    )
    assert summary.tokens == version.tokens and counts["count"] + counts["validation_records"] == 60
    assert fact("Total value") == (
        f"{counts['sum']:,.4f} (mean {counts['mean']:.4f} a record; {round(counts['negative_share'] * 100)}% "
        f"of records of negative value; {counts.get('flagged', 0)} flagged as possible poison)"
    )
    assert fact("Market rate") == "median of 1 comparable listing: €20.00 per 1,000 units of value"
    assert job.public_id in fact("Valuation") and "(UTC)" in fact("Valuation")
