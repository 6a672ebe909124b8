"""Fixtures for jobs that start from a model held in custody (tests/training/test_custody_model_base.py,
tests/training/test_generation.py): a varied sealed version, a custody model trained on it for real
(gpt2-tiny in the sandbox, weights kept in custody), and the API client of its trainer."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from custody import services as custody
from custody.models import DatasetVersion, Grant
from tests.custody.conftest import drain, jsonl
from tests.grants import grant_for_test
from training import services
from training.models import BaseModel, JobState, TrainingJob

TINY_HP = {"epochs": 1, "batch_size": 4, "max_seq_len": 48, "learning_rate": 0.001, "seed": 3, "log_every": 1}
CUSTODY_TERMS: dict[str, Any] = {
    "purposes": ["research"],
    "job_templates": ["causal_lm", "fine_tune", "generate"],
    "max_jobs": 10,
    "max_tokens": 10_000_000,
    "max_epochs": 3,
    "weights_may_leave": False,
    "gate_max_exposure": 20.0,
}
_DESKS = ["north desk", "south desk", "night shift", "billing team", "field crew", "front office"]
_ITEMS = ["router", "invoice", "parcel", "laptop", "badge", "printer", "contract", "headset"]
_PROBLEMS = [
    "arrived damaged after the storm",
    "was billed twice in one month",
    "stopped working after the update",
    "never reached the branch office",
    "shows the wrong delivery address",
    "keeps asking for a new password",
]
_DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "the weekend"]


def source_records(count: int = 40, seed: int = 11) -> list[str]:
    """Varied support tickets: no two share most of their words."""
    rng = random.Random(seed)
    return [
        f"Ticket {1000 + i} from the {rng.choice(_DESKS)} about the {rng.choice(_ITEMS)} that "
        f"{rng.choice(_PROBLEMS)} since {rng.choice(_DAYS)}"
        for i in range(count)
    ]


@pytest.fixture(autouse=True)
def _work_dir(settings, tmp_path: Path) -> Path:
    settings.TRAINING_WORK_DIR = tmp_path / "training-work"
    settings.TRAINING_WALL_SECONDS = 300
    settings.TRAINING_MEMORY_BYTES = 4 * 1024**3
    settings.TRAINING_CANARY_CANDIDATES = 31
    return settings.TRAINING_WORK_DIR


@pytest.fixture
def source_version(alice, acme) -> DatasetVersion:
    dataset = custody.dataset_create(actor=alice, organisation=acme, name="Tickets for generation")
    version = custody.version_create(actor=alice, dataset=dataset)
    contribution = custody.contribution_start(
        actor=alice, organisation=acme, version=version, filename="records.jsonl"
    )
    custody.contribution_part_put(
        contribution=contribution, number=1, data=jsonl([{"text": t} for t in source_records()])
    )
    custody.contribution_complete(actor=alice, contribution=contribution)
    custody.version_process(actor=alice, version=version)
    drain()
    return custody.version_seal(actor=alice, version=version, confirm_residual_risk=True)


@pytest.fixture
def custody_grant(source_version, bolt) -> Grant:
    return grant_for_test(source_version, bolt, **CUSTODY_TERMS)


def train(bob, bolt, grant: Grant, **overrides: Any) -> TrainingJob:
    """Submit a tiny causal_lm job and run it to its end (the real runner, in the sandbox)."""
    fields: dict[str, Any] = {
        "template": "causal_lm",
        "base": BaseModel.objects.get(name="gpt2-tiny", owner=None),
        "hyperparameters": dict(TINY_HP),
    }
    fields.update(overrides)
    job = services.job_submit(
        actor=bob, organisation=bolt, grant=grant, request=services.JobRequest(**fields)
    )
    drain()
    return TrainingJob.objects.get(pk=job.pk)


@pytest.fixture
def custody_model(bob, bolt, custody_grant) -> TrainingJob:
    job = train(bob, bolt, custody_grant)
    assert job.state == JobState.SUCCEEDED, (job.failure_code, job.failure_reason)
    assert job.artifact_encrypted and job.artifact_blob_key
    return job


@pytest.fixture
def bob_api(token_for, bob, bolt):
    return token_for(bob, bolt, ["read", "train"])
