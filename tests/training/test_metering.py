"""Per-contribution metering (issue 15, item 1), through the launcher, the real sandbox and settlement.

Acme and Cora each contribute records to one sealed version; Bolt buys a metered license. The
runner counts the platform tokens its steps read per source (the launcher numbers the
contributions), the launcher records them in custody with the job's usage, and settlement splits
the job's release by them: a job stopped by ``max_steps`` after reading only Acme's records pays
Acme all of it; a full job pays each contributor by the tokens it read.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest
import torch
from django.db.models import Sum

from common.models import Organisation, User
from custody import services as custody
from custody.models import Contribution, DatasetVersion, Shard, UsageByContribution, UsageRecord
from marketplace.ledger import balance, ledger_check, payable_account, platform_account, split
from marketplace.models import AccountKind, License, Settlement
from marketplace.services import catalog
from marketplace.services.funding import topup_record
from marketplace.services.orders import order_place
from marketplace.tasks import marketplace_sweep
from tests.factories import MembershipFactory, OrganisationFactory, UserFactory
from tests.marketplace.catalog.conftest import terms_doc
from tests.training.conftest import TINY_HP, drain, jsonl
from training.models import BaseModel, JobState, TrainingJob
from training.runner.data import split_records
from training.runner.train import batches

LABELS = ["refund", "outage", "billing"]
BATCH = 4


@pytest.fixture(autouse=True)
def _work_dir(settings, tmp_path: Path) -> Path:
    settings.TRAINING_WORK_DIR = tmp_path / "training-work"
    settings.TRAINING_WALL_SECONDS = 300
    settings.TRAINING_CANARY_CANDIDATES = 31
    settings.MARKETPLACE_FEE_BPS = 1000
    return settings.TRAINING_WORK_DIR


@pytest.fixture
def cora(db) -> Organisation:
    return cast(Organisation, OrganisationFactory(name="Cora Texts", is_provider=True))


@pytest.fixture
def dana(cora) -> User:
    user = UserFactory(username="dana")
    MembershipFactory(user=user, organisation=cora, role="admin")
    return cast(User, user)


def _put(actor: User, organisation: Organisation, version: DatasetVersion, records: list[dict]) -> None:
    contribution = custody.contribution_start(
        actor=actor,
        organisation=organisation,
        version=version,
        filename=f"{organisation.name.split()[0].lower()}.jsonl",
        metadata_fields=["kind"],
    )
    custody.contribution_part_put(contribution=contribution, number=1, data=jsonl(records))
    custody.contribution_complete(actor=actor, contribution=contribution)


@pytest.fixture
def pooled(alice, acme, dana, cora, dataset) -> DatasetVersion:
    """A sealed version: Acme's 16 labelled tickets, then Cora's 16 (different wording)."""
    version = custody.version_create(actor=alice, dataset=dataset)
    custody.contributor_invite(actor=alice, version=version, organisation=cora)
    acme_rows = [
        {"text": f"Ticket {i}: the router restarts hourly.", "kind": LABELS[i % 3]} for i in range(16)
    ]
    cora_rows = [
        {"text": f"Case {i}: invoices arrive twice for the same month.", "kind": LABELS[i % 3]}
        for i in range(16)
    ]
    _put(alice, acme, version, acme_rows)
    _put(dana, cora, version, cora_rows)
    custody.version_process(actor=alice, version=version)
    drain()
    return custody.version_seal(actor=alice, version=version)


@pytest.fixture
def license_(pooled, alice, bolt, bob, ops) -> License:
    """A metered license at 100,000.00 per million platform tokens: 10 minor units a token."""
    listing = catalog.listing_create(actor=alice, version=pooled, title="Pooled tickets")
    doc = terms_doc(
        permission={
            "purposes": ["research"],
            "job_templates": ["causal_lm", "seq_classification"],
            "weights_may_leave": True,
        },
        duty={"attribution": "Acme and Cora", "release_gate": {"max_exposure": 20.0}},
    )
    doc["constraint"] = {"max_jobs": 5, "max_epochs": 2, "max_tokens": 20_000, "term_days": 30}
    offer = catalog.offer_create(
        actor=alice,
        listing=listing,
        name="Metered",
        terms=doc,
        price={"model": "metered", "unit_price": "100000.00"},
    )
    catalog.listing_publish(actor=alice, listing=listing)
    topup_record(organisation=bolt, amount=1_000_000, currency="EUR", external_ref="bank-1", actor=ops)
    return License.objects.select_related("grant").get(order=order_place(buyer=bolt, offer=offer, actor=bob))


def stream_sources(version: DatasetVersion) -> list[int]:
    """The contribution of each record, in the order custody streams them (by shard index)."""
    sources: list[int] = []
    for shard in Shard.objects.filter(version=version).order_by("index"):
        sources += [shard.contribution_id] * shard.records
    return sources


def first_batch(count: int, seed: int) -> set[int]:
    """The stream positions the runner's first classification step trains on (validation 0)."""
    order, _ = split_records(list(range(count)), 0.0, seed)
    index = next(batches(len(order), BATCH, torch.Generator().manual_seed(seed)))
    return {order[i] for i in index.tolist()}


def contribution_of(version: DatasetVersion, organisation: Organisation) -> Contribution:
    return Contribution.objects.get(version=version, contributor=organisation)


def owed(organisation: Organisation) -> int:
    return balance(payable_account(organisation=organisation, currency="EUR"))


def reads_of(job: TrainingJob) -> dict[int, int]:
    usage = UsageRecord.objects.get(grant=job.grant, consumer_ref=job.consumer_ref, kind="tokens_trained")
    return dict(UsageByContribution.objects.filter(usage=usage).values_list("contribution", "quantity"))


def released_for(job: TrainingJob) -> Settlement:
    """Settle the job's usage as beat does (the sweep; tests run no after-commit doorbells)."""
    marketplace_sweep()
    drain()
    return Settlement.objects.get(usage__consumer_ref=job.consumer_ref, usage__kind="tokens_trained")


def test_a_job_stopped_after_reading_only_acmes_records_pays_acme_all_of_its_release(
    license_, pooled, submit, acme, cora
):
    sources = stream_sources(pooled)
    acme_records = contribution_of(pooled, acme).pk
    # A seed whose first batch holds only Acme's records (the runner's own split and batching).
    seed = next(
        s for s in range(500) if all(sources[i] == acme_records for i in first_batch(len(sources), s))
    )
    minilm = BaseModel.objects.get(name="minilm-l6")
    hp = {**TINY_HP, "seed": seed, "max_steps": 1, "batch_size": BATCH, "validation_fraction": 0}
    job = submit(
        license_.grant, template="seq_classification", base=minilm, label_field="kind", hyperparameters=hp
    )
    drain()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
    assert job.step == 1 and job.tokens_trained > 0

    assert reads_of(job) == {acme_records: job.tokens_trained}
    settlement = released_for(job)
    assert settlement.amount == job.tokens_trained * 10
    # Acme gets every minor unit the holders get; Cora, who was not read, nothing.
    assert owed(acme) == settlement.amount - settlement.fee and owed(cora) == 0
    assert list(settlement.lines.values_list("holder", flat=True)) == [acme.pk]
    assert job.receipt["receipt"]["platform_tokens_by_contribution"] == [
        {"contribution": contribution_of(pooled, acme).public_id, "platform_tokens": job.tokens_trained}
    ]
    assert ledger_check() == []


@pytest.mark.timeout(600)
def test_a_full_job_splits_its_release_by_the_tokens_read_from_each_contribution(
    license_, pooled, submit, acme, cora
):
    # A classifier: a causal model would memorise these repetitive tickets and the gate withhold it.
    minilm = BaseModel.objects.get(name="minilm-l6")
    hp = {**TINY_HP, "epochs": 1, "batch_size": 16, "validation_fraction": 0}
    job = submit(
        license_.grant, template="seq_classification", base=minilm, label_field="kind", hyperparameters=hp
    )
    drain()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)

    contributed = {
        c.pk: int(c.shards.aggregate(total=Sum("tokens"))["total"])
        for c in Contribution.objects.filter(version=pooled)
    }
    # Every record once: each contribution's sealed tokens.
    assert reads_of(job) == contributed
    assert job.tokens_trained == pooled.tokens
    settlement = released_for(job)
    by_org = {contribution_of(pooled, org).pk: org.pk for org in (acme, cora)}
    expected = split(settlement.amount, {by_org[pk]: n for pk, n in reads_of(job).items()}, 1000)
    assert (owed(acme), owed(cora)) == (expected.parts[acme.pk], expected.parts[cora.pk])
    assert (
        owed(acme) + owed(cora) + balance(platform_account(kind=AccountKind.PLATFORM_FEE, currency="EUR"))
        == settlement.amount
    )
