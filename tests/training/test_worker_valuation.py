"""A provider's valuation through a real Celery worker: submitted through the API by the owner's
admin, run in the sandbox by the live worker, aggregates on the job, flags sealed in custody, no
privacy budget spent and nothing billed."""

from __future__ import annotations

import time

import pytest
from django.db import transaction

from common.models import AuditEvent
from common.processes import wait_until
from common.work import work_sweep
from custody import services as custody
from custody.models import DatasetVersion, GrantPurpose, PrivacyBudgetEntry, UsageRecord, VersionState
from tests.custody.conftest import jsonl
from tests.training.test_worker_jobs import recover, shared_dirs  # noqa: F401 - fixture
from training.models import JobState, TrainingJob

pytestmark = pytest.mark.worker

TOPICS = {
    "weather": "rain and wind are expected over the hills tonight, report {i}",
    "cooking": "simmer the onions in butter before adding the rice, recipe {i}",
}


def records() -> list[dict]:
    """60 records, 4 of them (2 a topic) with their labels flipped."""
    rows = []
    for i in range(60):
        topic = ("weather", "cooking")[i % 2]
        label = ("cooking" if topic == "weather" else "weather") if i in (7, 18, 33, 44) else topic
        rows.append({"text": TOPICS[topic].format(i=i), "kind": label})
    return rows


def sealed_labelled(alice, acme, rows: list[dict]) -> DatasetVersion:
    """A sealed version whose records carry ``kind`` as metadata (the label), ingested by the worker."""
    with transaction.atomic():
        dataset = custody.dataset_create(actor=alice, organisation=acme, name=f"Valued {time.time_ns()}")
        version = custody.version_create(actor=alice, dataset=dataset)
        contribution = custody.contribution_start(
            actor=alice,
            organisation=acme,
            version=version,
            filename="records.jsonl",
            metadata_fields=["kind"],
        )
        custody.contribution_part_put(contribution=contribution, number=1, data=jsonl(rows))
    custody.contribution_complete(actor=alice, contribution=contribution)
    custody.version_process(actor=alice, version=version)

    def reviewed() -> bool:
        work_sweep()
        return DatasetVersion.objects.get(pk=version.pk).state == VersionState.REVIEW

    wait_until(reviewed, what="the ingest", timeout=180, interval=0.5)
    return custody.version_seal(actor=alice, version=version)


def test_the_owner_values_its_version_through_the_live_worker(
    shared_dirs,  # noqa: F811
    settings,
    alice,
    acme,
    token_for,
):
    settings.TRAINING_WALL_SECONDS = 300
    version = sealed_labelled(alice, acme, records())
    response = token_for(alice, acme, ["provide"]).post(
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
    job_id = response.json()["id"]

    def finished() -> bool:
        recover()
        return TrainingJob.objects.get(public_id=job_id).is_final

    wait_until(finished, what="the valuation job", timeout=420, interval=1.0)
    job = TrainingJob.objects.get(public_id=job_id)
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
    assert job.grant.purpose == GrantPurpose.VALUATION
    summary = job.metrics["valuation"]["summary"]
    assert summary["count"] == 45 and summary["validation_records"] == 15 and summary["flagged"] >= 1
    assert job.artifact_encrypted and job.artifact_blob_key
    flags = custody.artifact_open(version=version, name=f"valuation-flags-job-{job.pk}")
    assert flags.startswith(b'{"ids": [') and b"onions" not in flags
    assert not PrivacyBudgetEntry.objects.filter(version=version).exists()
    assert not UsageRecord.objects.filter(grant=job.grant, kind="tokens_trained").exists()
    opened = AuditEvent.objects.filter(action="custody.stream_open", details__consumer_ref=job.consumer_ref)
    assert {e.details["purpose"] for e in opened} == {"valuation"}
