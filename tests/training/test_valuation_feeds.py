"""A real valuation job feeds marketplace (issue 15 item 3): its stored summary gives the listing
draft its value per million tokens, and a value-weighted rights proposal that the co-contributor
approves. Runs the sandboxed runner (slow: about a minute under load).
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
from django.test import Client

from common.models import Organisation
from custody import services as custody
from custody.models import DatasetVersion, ValuationSummary
from marketplace.models import AllocationState, RightsAllocation
from marketplace.services import catalog
from marketplace.services.price_suggestion import value_per_million_tokens
from marketplace.services.rights import allocation_approve, allocation_in_force, allocation_shares
from tests.factories import OrganisationFactory
from tests.marketplace.catalog.conftest import member
from tests.training.conftest import drain, jsonl
from training.models import JobState, TrainingJob

TOPICS = {
    "weather": "rain and wind are expected over the hills tonight, report {i}",
    "cooking": "simmer the onions in butter before adding the rice, recipe {i}",
}


@pytest.fixture(autouse=True)
def _work_dir(settings, tmp_path: Path) -> Path:
    settings.TRAINING_WORK_DIR = tmp_path / "training-work"
    settings.TRAINING_WALL_SECONDS = 300
    settings.TRAINING_MEMORY_BYTES = 4 * 1024**3
    return settings.TRAINING_WORK_DIR


def _upload(actor, organisation, version: DatasetVersion, rows: list[dict], filename: str) -> None:
    contribution = custody.contribution_start(
        actor=actor,
        organisation=organisation,
        version=version,
        filename=filename,
        metadata_fields=["kind"],
    )
    custody.contribution_part_put(contribution=contribution, number=1, data=jsonl(rows))
    custody.contribution_complete(actor=actor, contribution=contribution)


@pytest.fixture
def pooled(alice, acme, dataset):
    """A sealed version pooled by two organisations: Acme's 40 clean records, Partner's 20 with
    their labels flipped (interleaved, so each flipped record sits among clean neighbours)."""
    partner = cast(Organisation, OrganisationFactory(name="Partner Texts", is_provider=True))
    pat = member(partner, "pat", "admin")
    version = custody.version_create(actor=alice, dataset=dataset)
    custody.contributor_invite(actor=alice, version=version, organisation=partner)
    topic = [("weather", "cooking")[i % 2] for i in range(60)]
    clean = [{"text": TOPICS[topic[i]].format(i=i), "kind": topic[i]} for i in range(60) if i % 3 != 2]
    flipped = [
        {"text": TOPICS[topic[i]].format(i=i), "kind": "cooking" if topic[i] == "weather" else "weather"}
        for i in range(60)
        if i % 3 == 2
    ]
    _upload(alice, acme, version, clean, "clean.jsonl")
    _upload(pat, partner, version, flipped, "flipped.jsonl")
    custody.version_process(actor=alice, version=version)
    drain()
    sealed = custody.version_seal(actor=alice, version=DatasetVersion.objects.get(pk=version.pk))
    return sealed, partner, pat


def test_a_real_valuation_prices_the_draft_and_weights_a_rights_proposal(pooled, alice, acme, token_for):
    version, partner, pat = pooled
    listing = catalog.listing_create(actor=alice, version=version, title="Pooled recipes and weather")
    client = token_for(alice, acme, ["read", "provide"])
    response = client.post(
        "/api/v1/training/valuations",
        {
            "version_id": version.public_id,
            "label_field": "kind",
            "hyperparameters": {"batch_size": 16, "max_seq_len": 32, "seed": 3},
            "valuation": {"k": 3, "min_group": 10, "holdout_fraction": 0.25},
        },
        format="json",
    )
    assert response.status_code == 202, response.content
    drain()
    job = TrainingJob.objects.get(public_id=response.json()["id"])
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)

    # The job's published aggregates were kept in custody, keyed by contribution.
    summary = ValuationSummary.objects.get(job_ref=job.public_id)
    assert summary.version_id == version.pk and summary.tokens == version.tokens > 0
    published = job.metrics["valuation"]
    assert summary.summary == published["summary"]
    assert sorted(summary.groups) == sorted(
        name.removeprefix("contribution-") for name in published["groups"]
    )
    totals = {c.contributor_id: summary.groups[str(c.pk)]["sum"] for c in version.contributions.all()}
    assert totals[acme.pk] > 0 > totals[partner.pk]  # clean, then flipped

    # The listing draft shows the value per million tokens and which job computed it.
    page = Client()
    page.force_login(alice)
    body = page.get(f"/market/listings/{listing.public_id}/").content.decode()
    value = value_per_million_tokens(summary)
    assert value is not None and float(value) == pytest.approx(summary.summary["sum"] * 1e6 / summary.tokens)
    assert job.public_id in body and f'data-value-per-million="{value}"' in body

    # A value-weighted proposal: Partner's negative total counts as zero, so it keeps 1 bps.
    response = client.post(
        f"/api/v1/catalog/listings/{listing.public_id}/rights", {"basis": "valuation"}, format="json"
    )
    assert response.status_code == 201, response.content
    proposal = RightsAllocation.objects.get(public_id=response.json()["id"])
    assert proposal.state == AllocationState.PROPOSED and proposal.basis == f"valuation {job.public_id}"
    assert allocation_shares(proposal) == {acme.pk: 9_999, partner.pk: 1}
    assert allocation_in_force(version=version).from_contributions  # tokens until Partner approves
    allocation_approve(actor=pat, allocation=proposal, organisation=partner)
    assert allocation_in_force(version=version).pk == proposal.pk
