"""A valuation job through the launcher: custody stream -> sandboxed runner -> aggregates on the job,
flagged ids sealed in custody, no record text or id anywhere the trainer reads.

The job is submitted as a seq_classification job and turned into a valuation job in the database:
the `valuation` template is not yet a JobTemplate choice (a model change, see docs/training.md
"Data valuation"), the launcher path is the real one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from custody import services as custody
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
def valued_grant(alice, dataset, upload, bolt, license_terms):
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
    version = custody.version_seal(actor=alice, version=version)
    return grant_for_test(version, bolt, **license_terms)


def test_a_valuation_job_publishes_aggregates_and_seals_its_flags(valued_grant, submit, token_for, bob, bolt):
    minilm = BaseModel.objects.get(name="minilm-l6")
    job = submit(valued_grant, template="seq_classification", base=minilm, label_field="kind")
    TrainingJob.objects.filter(pk=job.pk).update(template="valuation", spec=SPEC)
    drain()
    job = TrainingJob.objects.get(pk=job.pk)
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
    valuation = job.metrics["valuation"]
    groups = sorted(valuation["groups"].values(), key=lambda g: -g["count"])
    assert [g["count"] for g in groups] and all(g["count"] >= 10 for g in groups)
    assert len(groups) == 2 and groups[0]["sum"] > 0 > groups[1]["sum"]  # clean, then flipped
    assert job.artifact_encrypted and job.artifact_blob_key and job.tokens_trained == 0
    assert valuation["summary"]["flagged"] >= 1
    body = token_for(bob, bolt, ["read", "train"]).get(f"/api/v1/training/jobs/{job.public_id}").content
    assert b"onions" not in body and b"hills" not in body and b'":' + b"0:" not in body
    assert json.dumps(job.metrics).count("onions") == 0


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
