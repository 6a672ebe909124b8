"""A sentinel planted in every record never reaches job logs, metrics, errors, events, API responses,
the database, the artifact or any file; the positive control finds it in the decrypted stream."""

from __future__ import annotations

import io
import json
import logging
import tarfile
import time
from pathlib import Path

import pytest

from custody import services as custody
from tests.custody.scanner import places_to_scan, scan_database, scan_files
from tests.grants import grant_for_test
from tests.training.conftest import drain, jsonl
from training.artifacts import artifact_bytes
from training.models import BaseModel, JobState, TrainingJob

SENTINEL = "zqtrainsentinelxk"
URL = "/api/v1/training/jobs"


@pytest.fixture
def planted(alice, dataset, upload, bolt, license_terms):
    version = custody.version_create(actor=alice, dataset=dataset)
    records = [
        {
            # Not name-shaped: the English tagger reads an unknown word after "about" as a name
            # or an organisation and masks it, and then the scan below would prove nothing.
            "text": f"Ticket {i}: the invoice code {SENTINEL} was delayed {i} days.",
            "kind": "billing" if i % 2 else "ops",
        }
        for i in range(40)
    ]
    upload(version, jsonl(records), metadata_fields=["kind"])
    custody.version_process(actor=alice, version=version)
    drain()
    version = custody.version_seal(actor=alice, version=version)
    return version, grant_for_test(version, bolt, **license_terms)


@pytest.fixture(autouse=True)
def _started() -> float:
    """When the test began (before its data was planted): older files are not this run's output."""
    return time.time()


@pytest.fixture(autouse=True)
def _work_dir(settings, tmp_path: Path) -> Path:
    settings.TRAINING_WORK_DIR = tmp_path / "training-work"
    settings.TRAINING_CANARY_CANDIDATES = 31
    return settings.TRAINING_WORK_DIR


def test_the_sentinel_never_leaves_custody(
    _started, planted, submit, token_for, bob, bolt, caplog, _work_dir
):
    _version, grant = planted
    # Positive control: the decrypted stream really holds the sentinel.
    stream = custody.grant_stream_open(grant=grant, consumer_ref="control", purpose="license")
    assert any(SENTINEL in json.dumps(r) for batch in stream for r in batch)

    caplog.set_level(logging.DEBUG)
    ok = submit(grant)
    minilm = BaseModel.objects.get(name="minilm-l6")
    # Fails inside the launcher: records lack the label field named.
    failing = submit(grant, template="seq_classification", base=minilm, label_field="missing")
    drain()
    ok.refresh_from_db()
    failing.refresh_from_db()
    assert ok.state == JobState.SUCCEEDED, ok.failure_reason
    assert failing.state == JobState.FAILED and failing.failure_code == "training.labels_missing"

    client = token_for(bob, bolt, ["read", "train"])
    seen = [client.get(URL).content]
    for job in (ok, failing):
        for suffix in ("", "/metrics", "/receipt", "/cancel"):
            call = client.post if suffix == "/cancel" else client.get
            seen.append(call(f"{URL}/{job.public_id}{suffix}").content)
    archive = artifact_bytes(TrainingJob.objects.get(pk=ok.pk))
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            seen.append(handle.read() if handle else b"")
    seen.append(caplog.text.encode())
    assert [i for i, blob in enumerate(seen) if SENTINEL.encode() in blob] == []
    assert scan_database([SENTINEL]) == {}
    assert scan_files([*places_to_scan(), _work_dir], [SENTINEL], newer_than=_started) == {}
