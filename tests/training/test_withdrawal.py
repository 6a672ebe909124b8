"""Withdrawal through real jobs (issue 15 item 4): the sentinel never reaches a later job.

Acme and Cora pool labelled tickets in one sealed version; every one of Cora's
records carries a sentinel string. Bolt buys a metered license and trains a
job on both. Cora withdraws its contribution; custody re-seals the version
without it, the license and listing move to the successor, and Bolt, which
holds released weights trained on Cora's records, is notified. A later job on
the same license runs in the real sandbox and reads only Acme's records.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import pytest

from common.audit import audit_integrate
from common.models import AuditEvent, Notification
from custody import services as custody
from custody.models import Contribution, DatasetVersion, Shard, VersionState
from marketplace.models import License, Listing
from tests.training.conftest import TINY_HP, drain
from tests.training.pooling import metered_license, pooled_seal, reads_of
from training.models import BaseModel, JobState, TrainingJob

SENTINEL = "zebracanary"
LABELS = ["refund", "outage", "billing"]


@pytest.fixture(autouse=True)
def _work_dir(settings, tmp_path: Path) -> Path:
    settings.TRAINING_WORK_DIR = tmp_path / "training-work"
    settings.TRAINING_WALL_SECONDS = 300
    settings.TRAINING_CANARY_CANDIDATES = 31
    return settings.TRAINING_WORK_DIR


@pytest.fixture
def pooled(alice, acme, dana, cora, dataset) -> DatasetVersion:
    """Acme's 16 tickets, then Cora's 16, each with the sentinel."""
    return pooled_seal(
        alice=alice,
        acme=acme,
        dana=dana,
        cora=cora,
        dataset=dataset,
        acme_rows=[{"text": f"Ticket {i}: the router restarts.", "kind": LABELS[i % 3]} for i in range(16)],
        cora_rows=[
            {"text": f"Case {i}: {SENTINEL} invoices twice.", "kind": LABELS[i % 3]} for i in range(16)
        ],
        filenames=("rows.jsonl", "rows.jsonl"),
    )


@pytest.fixture
def license_(pooled, alice, bolt, bob, ops) -> License:
    """A metered license at 100.00 per million platform tokens."""
    return metered_license(
        pooled,
        alice=alice,
        bolt=bolt,
        bob=bob,
        ops=ops,
        job_templates=["seq_classification"],
        unit_price="100.00",
    )


def run(submit, license_: License) -> TrainingJob:
    minilm = BaseModel.objects.get(name="minilm-l6")
    hp = {**TINY_HP, "epochs": 1, "batch_size": 16, "validation_fraction": 0}
    job = submit(
        license_.grant, template="seq_classification", base=minilm, label_field="kind", hyperparameters=hp
    )
    drain()
    job.refresh_from_db()
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
    return cast(TrainingJob, job)


@pytest.mark.timeout(900)
def test_a_withdrawn_contribution_never_reaches_a_later_job(
    license_, pooled, submit, acme, cora, dana, bolt, django_capture_on_commit_callbacks
):
    theirs = Contribution.objects.get(version=pooled, contributor=cora)
    mine = Contribution.objects.get(version=pooled, contributor=acme)
    before = run(submit, license_)
    assert set(reads_of(before)) == {mine.pk, theirs.pk}
    assert not before.artifact_encrypted and before.artifact_blob_key

    with django_capture_on_commit_callbacks(execute=True):
        withdrawal = custody.contribution_withdraw(actor=dana, contribution=theirs, reason="consent ended")
        drain()
    drain()  # training's notice, enqueued by the bell
    withdrawal.refresh_from_db()
    successor = withdrawal.to_version
    assert successor is not None and successor.state == VersionState.SEALED
    pooled.refresh_from_db()
    assert pooled.state == VersionState.SUPERSEDED

    license_.refresh_from_db()
    assert license_.version_id == successor.pk and license_.grant.version_id == successor.pk
    assert Listing.objects.get(provider=acme).version_id == successor.pk
    notice = Notification.objects.get(organisation=bolt, kind="artifact.data_withdrawn")
    assert notice.payload["jobs"] == [before.public_id] and notice.object_id == withdrawal.public_id

    after = run(submit, license_)
    carried = Contribution.objects.get(version=successor, carried_from=mine)
    assert reads_of(after) == {carried.pk: after.tokens_trained}
    assert after.tokens_trained == sum(
        Shard.objects.filter(version=successor).values_list("tokens", flat=True)
    )
    audit_integrate()
    opened = AuditEvent.objects.filter(action="custody.stream_open", details__consumer_ref=after.consumer_ref)
    assert {e.details["version"] for e in opened} == {successor.pk}
    # The lineage of the withdrawn records names the first job and not the later one.
    refs = {r.consumer_ref for r in custody.contribution_lineage(contribution=theirs)}
    assert refs == {before.consumer_ref}
