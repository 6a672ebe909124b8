"""A classifier's label values are custody data: they leave only as opaque ids and a vocabulary hash.

The labels come from a metadata field whose values nothing publishes (listing statistics count
entities, languages and lengths; Croissant names the field, never its values). A sentinel value
must not appear in the job API, the receipt, the artifact's config or the database.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from custody import services as custody
from tests.custody.scanner import scan_database
from tests.grants import grant_for_test
from tests.training.conftest import TINY_HP, drain, jsonl
from training.artifacts import artifact_bytes
from training.models import BaseModel, JobState, TrainingJob

SENTINEL = "zqlabelsentinelvw"
VALUES = [f"{SENTINEL}-refund", f"{SENTINEL}-outage", f"{SENTINEL}-billing"]
URL = "/api/v1/training/jobs"


@pytest.fixture(autouse=True)
def _work_dir(settings, tmp_path: Path) -> Path:
    settings.TRAINING_WORK_DIR = tmp_path / "training-work"
    settings.TRAINING_WALL_SECONDS = 300
    return settings.TRAINING_WORK_DIR


@pytest.fixture
def labelled_grant(alice, dataset, upload, bolt, license_terms):
    version = custody.version_create(actor=alice, dataset=dataset)
    records = [
        {"text": f"Ticket {i}: the router restarts every hour.", "kind": VALUES[i % 3]} for i in range(24)
    ]
    upload(version, jsonl(records), metadata_fields=["kind"])
    custody.version_process(actor=alice, version=version)
    drain()
    version = custody.version_seal(actor=alice, version=version)
    return grant_for_test(version, bolt, **license_terms)


def test_label_values_leave_custody_only_as_ids_and_a_hash(labelled_grant, submit, token_for, bob, bolt):
    # Positive control: the decrypted stream carries the sentinel labels.
    stream = custody.grant_stream_open(grant=labelled_grant, consumer_ref="control", purpose="license")
    assert {r["meta"]["kind"] for batch in stream for r in batch} == set(VALUES)

    minilm = BaseModel.objects.get(name="minilm-l6")
    hp = {**TINY_HP, "max_steps": 2}
    job = submit(
        labelled_grant, template="seq_classification", base=minilm, label_field="kind", hyperparameters=hp
    )
    drain()
    job = TrainingJob.objects.get(pk=job.pk)
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)

    client = token_for(bob, bolt, ["read", "train"])
    responses = {
        suffix: client.get(f"{URL}{suffix}").content for suffix in ("", f"/{job.pk}", f"/{job.pk}/metrics")
    }
    receipt = client.get(f"{URL}/{job.public_id}/receipt").json()
    with tarfile.open(fileobj=io.BytesIO(artifact_bytes(job)), mode="r:gz") as tar:
        handle = tar.extractfile("model/config.json")
        assert handle is not None
        config = json.loads(handle.read())

    # Three labels, so that transformers writes id2label (it leaves out its two-label default).
    assert config["id2label"] == {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    assert receipt["receipt"]["spec"]["labels"] == ["LABEL_0", "LABEL_1", "LABEL_2"]
    # LABEL_<i> is the i-th value of the sorted vocabulary; the hash lets the provider check that.
    expected = hashlib.sha256(json.dumps(sorted(VALUES)).encode()).hexdigest()
    assert receipt["receipt"]["label_vocabulary_sha256"] == expected
    leaks = [name for name, body in responses.items() if SENTINEL.encode() in body]
    assert leaks == [] and SENTINEL not in json.dumps(receipt) and SENTINEL not in json.dumps(config)
    assert scan_database([SENTINEL]) == {}
