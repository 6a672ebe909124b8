"""Valuation jobs through the launcher: custody stream -> sandboxed runner -> aggregates on the job,
flagged ids sealed in custody, no record text or id anywhere the submitter reads.

Both paths are submitted as users do (training/services/valuation.py): the owner's admin through
POST /training/valuations with its own version (no license), a trainer under its license with a
labelled set of its own, and the trainer's defaults through POST /training/jobs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.test import Client

from common.models import AuditEvent
from custody import services as custody
from custody.models import DatasetVersion, Finding, GrantPurpose, UsageRecord
from custody.services.valuation import POSSIBLE_POISON
from tests.grants import grant_for_test
from tests.training.conftest import drain, jsonl
from training.launcher import valuation_published
from training.models import BaseModel, JobState, TrainingJob

TOPICS = {
    "weather": "rain and wind are expected over the hills tonight, report {i}",
    "cooking": "simmer the onions in butter before adding the rice, recipe {i}",
}
SPEC = {
    "template": "valuation",
    "base": {"kind": "builtin", "name": "all-minilm-l6-v2"},
    "hyperparameters": {"batch_size": 16, "max_seq_len": 32, "seed": 3},
    "valuation": {"k": 3, "min_group": 10, "holdout_fraction": 0.25},
}


@pytest.fixture(autouse=True)
def _work_dir(settings, tmp_path: Path) -> Path:
    settings.TRAINING_WORK_DIR = tmp_path / "training-work"
    settings.TRAINING_WALL_SECONDS = 300
    settings.TRAINING_MEMORY_BYTES = 4 * 1024**3
    return settings.TRAINING_WORK_DIR


@pytest.fixture
def in_review(alice, dataset, upload):
    """60 records in review: 40 clean, 20 (every third, interleaved) with their labels flipped."""
    version = custody.version_create(actor=alice, dataset=dataset)
    # Every third record, interleaved (neighbours differ by the number), is the flipped contribution's.
    topic = [("weather", "cooking")[i % 2] for i in range(60)]
    clean = [{"text": TOPICS[topic[i]].format(i=i), "kind": topic[i]} for i in range(60) if i % 3 != 2]
    flipped = [
        {"text": TOPICS[topic[i]].format(i=i), "kind": "cooking" if topic[i] == "weather" else "weather"}
        for i in range(60)
        if i % 3 == 2
    ]
    upload(version, jsonl(clean), metadata_fields=["kind"])
    upload(version, jsonl(flipped), filename="more.jsonl", metadata_fields=["kind"])
    custody.version_process(actor=alice, version=version)
    drain()
    return DatasetVersion.objects.get(pk=version.pk)


@pytest.fixture
def sparse_review(alice, dataset, upload):
    """60 records in review, 4 of them (2 a topic) with their labels flipped: sparse poison, which
    the flags find (a contribution flipped wholesale shows in its value instead: its records agree
    with each other, docs/training.md "Poison flags")."""
    version = custody.version_create(actor=alice, dataset=dataset)
    rows = []
    for i in range(60):
        topic = ("weather", "cooking")[i % 2]
        label = ("cooking" if topic == "weather" else "weather") if i in (7, 18, 33, 44) else topic
        rows.append({"text": TOPICS[topic].format(i=i), "kind": label})
    upload(version, jsonl(rows), metadata_fields=["kind"])
    custody.version_process(actor=alice, version=version)
    drain()
    return DatasetVersion.objects.get(pk=version.pk)


@pytest.fixture
def valued_grant(alice, in_review, bolt, license_terms):
    version = custody.version_seal(actor=alice, version=in_review)
    # The license names the valuation template (license_terms lists the training templates only).
    terms = {**license_terms, "job_templates": [*license_terms["job_templates"], "valuation"]}
    return grant_for_test(version, bolt, **terms)


BODY = {
    "label_field": "kind",
    "hyperparameters": {"batch_size": 16, "max_seq_len": 32, "seed": 3},
    "valuation": {"k": 3, "min_group": 10, "holdout_fraction": 0.25},
}


def _checked(job: TrainingJob, client) -> dict:
    """The job succeeded with clean, then flipped, groups; no record text in what its owner reads."""
    job = TrainingJob.objects.get(pk=job.pk)
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
    valuation = job.metrics["valuation"]
    groups = sorted(valuation["groups"].values(), key=lambda g: -g["count"])
    assert [g["count"] for g in groups] and all(g["count"] >= 10 for g in groups)
    assert len(groups) == 2 and groups[0]["sum"] > 0 > groups[1]["sum"]  # clean, then flipped
    assert job.artifact_encrypted and job.artifact_blob_key and job.tokens_trained == 0
    assert job.epsilon_reserved is None and job.budget == ""  # no privacy budget
    for path in (f"/api/v1/training/jobs/{job.public_id}", f"/api/v1/training/jobs/{job.public_id}/metrics"):
        body = client.get(path).content
        assert b"onions" not in body and b"hills" not in body and b'":' + b"0:" not in body
    assert json.dumps(job.metrics).count("onions") == 0
    return valuation


def test_the_owner_values_its_own_version_without_a_license(valued_grant, token_for, alice, acme):
    version = valued_grant.version
    client = token_for(alice, acme, ["read", "provide"])
    response = client.post(
        "/api/v1/training/valuations", {**BODY, "version_id": version.public_id}, format="json"
    )
    assert response.status_code == 202, response.content
    assert response.json()["template"] == "valuation" and response.json()["license"] == ""
    drain()
    job = TrainingJob.objects.get(public_id=response.json()["id"])
    assert job.organisation == acme and job.grant.purpose == GrantPurpose.VALUATION
    assert job.grant.licensee is None and job.grant.version_id == version.pk
    _checked(job, client)
    opened = AuditEvent.objects.get(action="custody.stream_open", details__consumer_ref=job.consumer_ref)
    assert opened.details["purpose"] == "valuation"
    # The license's grant was not used: nothing counted against it.
    assert not UsageRecord.objects.filter(grant=valued_grant).exists()


def test_flags_of_a_version_in_review_join_its_findings_and_can_be_dropped(
    sparse_review, token_for, alice, acme
):
    in_review = sparse_review
    client = token_for(alice, acme, ["read", "provide"])
    response = client.post(
        "/api/v1/training/valuations", {**BODY, "version_id": in_review.public_id}, format="json"
    )
    assert response.status_code == 202, response.content
    drain()
    job = TrainingJob.objects.get(public_id=response.json()["id"])
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
    flags = Finding.objects.filter(version=in_review, kind=POSSIBLE_POISON)
    assert flags.count() == job.metrics["valuation"]["summary"]["flagged"] >= 1
    assert {f.group for f in flags} == {job.public_id}
    # Beside the screening findings in the owner's review, under their own label.
    report = Client()
    report.force_login(alice)
    html = report.get(f"/data/versions/{in_review.public_id}/report/").content.decode()
    assert "Possible poison (valuation)" in html
    # Dropped like any finding: sealing leaves them out.
    custody.findings_mark(actor=alice, version=in_review, finding_ids=[f.pk for f in flags], drop=True)
    dropping = set(Finding.objects.filter(version=in_review, drop=True).values_list("record_id", flat=True))
    assert {f.record_id for f in flags} <= dropping
    sealed = custody.version_seal(actor=alice, version=DatasetVersion.objects.get(pk=in_review.pk))
    assert sealed.records == 60 - len(dropping)


def test_a_trainer_values_a_licensed_version_against_its_own_labelled_set(
    valued_grant, token_for, bob, bolt, upload
):
    bolt.is_provider = True  # depositing a version of one's own takes the provider role
    bolt.save(update_fields=["is_provider"])
    own = custody.version_create(
        actor=bob, dataset=custody.dataset_create(actor=bob, organisation=bolt, name="Ours")
    )
    records = [
        {"text": TOPICS[t].format(i=100 + i), "kind": t} for i, t in enumerate(["weather", "cooking"] * 10)
    ]
    contribution = custody.contribution_start(
        actor=bob, organisation=bolt, version=own, filename="ours.jsonl", metadata_fields=["kind"]
    )
    custody.contribution_part_put(contribution=contribution, number=1, data=jsonl(records))
    custody.contribution_complete(actor=bob, contribution=contribution)
    custody.version_process(actor=bob, version=own)
    drain()
    own = custody.version_seal(actor=bob, version=own)
    client = token_for(bob, bolt, ["read", "train"])
    body = {**BODY, "license": valued_grant.external_ref, "validation_version_id": own.public_id}
    response = client.post("/api/v1/training/valuations", body, format="json")
    assert response.status_code == 202, response.content
    drain()
    job = TrainingJob.objects.get(public_id=response.json()["id"])
    assert job.grant_id == valued_grant.pk and job.request["validation_version_id"] == own.public_id
    valuation = _checked(job, client)
    assert valuation["summary"]["validation_records"] == 20
    opens = AuditEvent.objects.filter(action="custody.stream_open", details__consumer_ref=job.consumer_ref)
    assert sorted(e.details["purpose"] for e in opens) == ["license", "valuation"]


def test_the_jobs_endpoint_takes_the_valuation_template(valued_grant, token_for, bob, bolt):
    minilm = BaseModel.objects.get(name="minilm-l6")
    client = token_for(bob, bolt, ["read", "train"])
    body = {
        "license": valued_grant.external_ref,
        "template": "valuation",
        "base": minilm.public_id,
        "label_field": "kind",
    }
    response = client.post("/api/v1/training/jobs", body, format="json")
    assert response.status_code == 202, response.content
    job = TrainingJob.objects.get(public_id=response.json()["id"])
    assert job.template == "valuation" and job.spec["valuation"] == {} and job.tokens_planned == 0
    refused = client.post("/api/v1/training/jobs", {**body, "dp": {"target_epsilon": 1.0}}, format="json")
    assert refused.status_code == 422 and refused.json()["errors"][0]["pointer"] == "/dp/enabled"


def test_the_launcher_drops_small_groups_and_bins_and_non_numbers() -> None:
    raw = {
        "groups": {
            "a": {"count": 30, "sum": 1.5, "mean": 0.05},
            "b": {"count": 3, "sum": -2.0, "mean": -0.7},
        },
        "histogram": [{"low": 0, "high": 1, "count": 30}, {"low": 1, "high": 2, "count": 2}],
        "summary": {"count": 33, "note": "the onions record"},
        "values": [0.1, 0.2],
    }
    assert valuation_published(raw, min_group=20) == {
        "groups": {"a": {"count": 30, "sum": 1.5, "mean": 0.05}},
        "histogram": [{"low": 0, "high": 1, "count": 30}],
        "summary": {"count": 33},
        "min_group": 20,
    }
