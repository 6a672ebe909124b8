"""Per-contribution metering (issue 15, item 1), through the launcher, the real sandbox and settlement.

Acme and Cora each contribute records to one sealed version; Bolt buys a metered license. The
runner counts the platform tokens its steps read per source (the launcher numbers the
contributions), the launcher records them in custody with the job's usage, and settlement splits
the job's release by them: a job stopped by ``max_steps`` after reading only Acme's records pays
Acme all of it; a full job pays each contributor by the tokens it read.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from django.db.models import Sum

from common.models import Organisation
from custody.models import Contribution, DatasetVersion, Shard
from marketplace.ledger import balance, ledger_check, payable_account, platform_account, split
from marketplace.models import AccountKind, License, Settlement
from marketplace.tasks import marketplace_sweep
from tests.training.conftest import TINY_HP, drain
from tests.training.pooling import metered_license, pooled_seal, reads_of
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
def pooled(alice, acme, dana, cora, dataset) -> DatasetVersion:
    """A sealed version: Acme's 16 labelled tickets, then Cora's 16 (different wording)."""
    acme_rows = [
        {"text": f"Ticket {i}: the router restarts hourly.", "kind": LABELS[i % 3]} for i in range(16)
    ]
    cora_rows = [
        {"text": f"Case {i}: invoices arrive twice for the same month.", "kind": LABELS[i % 3]}
        for i in range(16)
    ]
    return pooled_seal(
        alice=alice,
        acme=acme,
        dana=dana,
        cora=cora,
        dataset=dataset,
        acme_rows=acme_rows,
        cora_rows=cora_rows,
    )


@pytest.fixture
def license_(pooled, alice, bolt, bob, ops) -> License:
    """A metered license at 100,000.00 per million platform tokens: 10 minor units a token."""
    return metered_license(
        pooled,
        alice=alice,
        bolt=bolt,
        bob=bob,
        ops=ops,
        job_templates=["causal_lm", "seq_classification"],
        unit_price="100000.00",
    )


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
